"""`--format fiftyone` read by FiftyOne itself: `fo.Dataset.from_dir(..., FiftyOneImageClassificationDataset)`
in FiftyOne's own virtualenv (it pins starlette and runs its own MongoDB, so never in zsclip's). Skips, saying
so, where that virtualenv is absent ($ZSCLIP_FIFTYONE_PYTHON, .venv-fo/ in the repository, or
/work/venvs/labelling-fiftyone) or has no MongoDB (fiftyone-db downloads mongod from mongodb.org when it
installs, which an offline machine cannot; test_labelling.py reads the layout as FiftyOne's docs define it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo"]
CANDIDATES = [os.environ.get("ZSCLIP_FIFTYONE_PYTHON", ""), str(REPO / ".venv-fo" / "bin" / "python"),
              "/work/venvs/labelling-fiftyone/bin/python"]
READER = """
import json, sys
from pathlib import Path
import fiftyone as fo
out = {}
for name, folder in json.loads(sys.argv[1]).items():
    dataset = fo.Dataset.from_dir(dataset_dir=folder, dataset_type=fo.types.FiftyOneImageClassificationDataset,
                                  label_field="zsclip", name=name)
    rows = {}
    for sample in dataset:
        value = sample["zsclip"]
        labels = value.classifications if hasattr(value, "classifications") else [value]
        rows[Path(sample.filepath).name] = [[c.label, c.confidence] for c in labels]
    out[name] = rows
print(json.dumps(out))
"""


def fiftyone_python() -> str | None:
    return next((c for c in CANDIDATES if c and os.access(c, os.X_OK)), None)


def test_fiftyone_imports_the_dataset_with_every_label_and_confidence(tmp_path):
    python = fiftyone_python()
    if python is None:
        pytest.skip("no FiftyOne virtualenv (see the module docstring)")
    folders = {}
    for name, extra in {"single": [], "multi": ["--multi-label", "--threshold", "0.05"]}.items():
        folders[name] = tmp_path / name
        result = CliRunner().invoke(main, ["classify", str(EXAMPLES), "--labels-file", str(EXAMPLES / "labels.txt"),
                                           *COMMON, *extra, "-o", str(folders[name]), "--format", "fiftyone"])
        assert result.exit_code == 0, result.output
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"),
           "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_ADMIN": "true"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([python, "-c", READER, json.dumps({k: str(v) for k, v in folders.items()})],
                         capture_output=True, text=True, env=env, timeout=600)
    if "MongoDB could not be installed" in run.stderr:  # fiftyone-db fetches mongod from mongodb.org at install
        pytest.skip("FiftyOne is installed but its MongoDB is not (fiftyone-db downloads mongod from mongodb.org "
                    "when it installs; offline it ships none)")
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    for name, folder in folders.items():
        written = json.loads((folder / "labels.json").read_text())
        expected = {}
        for uid, target in written["labels"].items():
            file = next((folder / "data").glob(f"{uid}.*")).name
            targets = target if isinstance(target, list) else [target]
            expected[file] = [[written["classes"][t["label"]], t["confidence"]] for t in targets]
        assert set(loaded[name]) == set(expected)
        for file, labels in expected.items():
            assert [label for label, _ in loaded[name][file]] == [label for label, _ in labels]
            assert [c for _, c in loaded[name][file]] == pytest.approx([c for _, c in labels])
    assert any(len(labels) > 1 for labels in loaded["multi"].values())
