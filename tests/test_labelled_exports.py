"""The loop closed: a Label Studio JSON export and a FiftyOne labels.json are labelled data for `zsclip eval`
and `zsclip adapt`. The labelled sets are made by zsclip's own sinks, then edited as a reviewer would (one label
corrected, one task left unannotated), so the expected accuracy is known exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from zsclip.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exports")
    (root / "photos").mkdir()
    for path in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(path, root / "photos" / path.name)
    return root


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def evaluated(data: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "metrics.json"
    invoke("eval", "--data", str(data), "--model", "demo", "--precision", "fp32", "-j", "0", "-t", "photo",
           "-o", str(out), *extra)
    return json.loads(out.read_text())


def test_a_label_studio_export_is_labelled_data_for_eval(photos, tmp_path):
    tasks_path = tmp_path / "tasks.json"
    invoke("classify", str(photos / "photos"), "--labels-file", str(EXAMPLES / "labels.txt"), *COMMON,
           "-o", str(tasks_path), "--format", "label-studio")
    tasks = json.loads(tasks_path.read_text())
    # a reviewer accepts every prediction but corrects one, and leaves one task unannotated
    export = []
    for index, task in enumerate(tasks):
        result = json.loads(json.dumps(task["predictions"][0]["result"]))
        if index == 0:
            result[0]["value"]["choices"] = ["red circle"]
        annotations = [] if index == 1 else [{"id": index, "result": result, "was_cancelled": False}]
        export.append({"id": index + 1, "data": task["data"], "annotations": annotations})
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export))
    metrics = evaluated(export_path, tmp_path, "--labels-file", str(EXAMPLES / "labels.txt"))
    assert metrics["num_images"] == len(tasks) - 1
    assert metrics["metrics"]["acc1"] == pytest.approx((len(tasks) - 2) / (len(tasks) - 1))


def test_a_fiftyone_dataset_is_labelled_data_for_eval_and_adapt(photos, tmp_path):
    dataset = tmp_path / "dataset"
    invoke("classify", str(photos / "photos"), "--labels-file", str(EXAMPLES / "labels.txt"), *COMMON,
           "-o", str(dataset), "--format", "fiftyone", "--files", "hardlink")
    labels = json.loads((dataset / "labels.json").read_text())
    first = next(iter(labels["labels"]))
    wrong = next(i for i, name in enumerate(labels["classes"]) if i != labels["labels"][first]["label"])
    labels["labels"][first]["label"] = wrong  # a reviewer's correction
    (dataset / "labels.json").write_text(json.dumps(labels))
    count = len(labels["labels"])
    metrics = evaluated(dataset, tmp_path, "--labels-file", str(EXAMPLES / "labels.txt"))
    assert metrics["num_images"] == count
    assert metrics["metrics"]["acc1"] == pytest.approx((count - 1) / count)
    head = tmp_path / "mine.zsc"
    invoke("adapt", "--data", str(dataset / "labels.json"), "--method", "linear", "--model", "demo",
           "--precision", "fp32", "-t", "photo", "-o", str(head))
    assert head.is_file()
    rows = tmp_path / "rows.csv"
    invoke("classify", str(photos / "photos"), "--classifier", str(head), "-j", "0", "-o", str(rows))
    assert len(rows.read_text().splitlines()) == count + 1
