"""A broken torch install is named as such, with the reinstall line, not as a bug in zsclip (issue 38, item 7).

The broken install is simulated: a ``torchvision`` package first on PYTHONPATH that fails as a torchvision
built for another torch does, while registering its operators.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zsclip.cli.environment import REINSTALL, broken_install
from zsclip.errors import ModelLoadError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MISMATCH = "operator torchvision::nms does not exist"


def test_a_missing_torchvision_operator_is_named_wherever_it_was_wrapped():
    try:
        try:
            raise RuntimeError(MISMATCH)
        except RuntimeError as error:  # as transformers' loader is wrapped: the cause names the install
            raise ModelLoadError(f"could not load transformers model 'x': {error}") from error
    except ModelLoadError as wrapped:
        line = broken_install(wrapped)
    assert line is not None and line.startswith("torchvision ") and "does not match torch" in line
    assert MISMATCH in line and REINSTALL in line and "not zsclip" in line
    assert broken_install(OSError(2, "No such file or directory")) is None
    assert broken_install(ImportError("libtorch_cpu.so: cannot open shared object file")) is not None


@pytest.mark.slow
def test_a_torchvision_built_for_another_torch_is_one_line_with_the_reinstall_line(tmp_path):
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise RuntimeError({MISMATCH!r})\n")
    path = os.pathsep.join([str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "ZSCLIP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("ZSCLIP_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "zsclip", "classify", str(EXAMPLES / "blue_ring.png"), "--model",
                             "demo", "--labels", "ring,star"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("zsclip: error: torchvision ") and "does not match torch" in line, line
    assert "bug in zsclip" not in line and "pip install --force-reinstall torch torchvision" in line
