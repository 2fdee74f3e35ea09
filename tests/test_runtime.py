"""The runtime tests (`runtime_cases.py`: fp32 parity per tower and runtime, export once, the commands, the service,
the Ray actor, the int8 gate, auto) run in a pytest process of their own.

ONNX Runtime, OpenVINO and NNCF load native thread pools into the process that uses them. In the full suite's
long-lived process (Ray's gRPC, FAISS's OpenMP and torch's threads already loaded by earlier modules) the run died
with SIGSEGV right after these cases, twice at the same test, while each module passed on its own; a child process
keeps those libraries out of the suite's process. The child runs the same cases under the same -m expression
(`pytest -m "not slow"` runs the quick ones), so nothing is skipped by the split.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


def test_the_runtime_cases_pass_in_a_process_of_their_own(request):
    cases = Path(__file__).with_name("runtime_cases.py")
    marks = request.config.option.markexpr
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases), *(["-m", marks] if marks
                                                                                            else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=cases.parents[1])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]
