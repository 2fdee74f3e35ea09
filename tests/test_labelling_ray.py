"""The labelling sinks and `zsclip sort` on Ray (issue 33): a real local Ray instance gives the files a local run
writes -- Label Studio tasks (read back as JSON), a FiftyOne labels.json, and the class folders of sort."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ray")

from zsclip.cli import main  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_ends_with_the_module")]  # a local Ray and its actors

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-t", "photo", "--labels-file", str(EXAMPLES / "labels.txt")]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelling_ray")
    for path in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(path, root / path.name)
    (root / "broken.png").write_bytes(b"not an image")
    return root


def run(*args) -> object:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_label_studio_and_fiftyone_files_on_ray_equal_the_local_ones(images, tmp_path):
    for where, extra in (("local", []), ("ray", ["--ray", "auto"])):
        (tmp_path / where).mkdir()
        for name, fmt, root in (("tasks.json", "label-studio", ["--image-root", images]),
                                ("dataset", "fiftyone", [])):
            result = run("classify", images, *COMMON, "-o", tmp_path / where / name, "--format", fmt, *root, *extra)
            assert result.exit_code == 1 and "broken.png" in result.stderr, result.output
    tasks = {where: sorted(json.loads((tmp_path / where / "tasks.json").read_text()),
                           key=lambda task: task["data"]["image"]) for where in ("local", "ray")}
    assert len(tasks["local"]) == len(list(EXAMPLES.glob("*.png")))
    for mine, theirs in zip(tasks["local"], tasks["ray"], strict=True):
        assert theirs["data"] == mine["data"]
        (prediction,), (reference,) = theirs["predictions"], mine["predictions"]
        assert prediction["result"] == reference["result"]
        assert prediction["score"] == pytest.approx(reference["score"], abs=1e-5)
    labels = {where: json.loads((tmp_path / where / "dataset" / "labels.json").read_text())
              for where in ("local", "ray")}
    assert labels["ray"]["classes"] == labels["local"]["classes"]
    assert labels["ray"]["labels"].keys() == labels["local"]["labels"].keys()
    for key, value in labels["ray"]["labels"].items():
        assert value["label"] == labels["local"]["labels"][key]["label"]
        assert value["confidence"] == pytest.approx(labels["local"]["labels"][key]["confidence"], abs=1e-5)


def test_sort_on_ray_places_every_image_where_the_local_sort_does(images, tmp_path):
    for where, extra in (("local", []), ("ray", ["--ray", "auto"])):
        result = run("sort", images, *COMMON, "--into", tmp_path / where, "--accept", "0.999", *extra)
        assert result.exit_code == 1 and "1 unreadable" in result.stderr, result.output
        assert "broken.png" in (tmp_path / where / "_errors.csv").read_text()
    placed = {where: sorted(str(p.relative_to(tmp_path / where)) for p in (tmp_path / where).rglob("*.png"))
              for where in ("local", "ray")}
    assert placed["local"] and placed["local"] == placed["ray"]
    assert any(path.startswith("_review/") for path in placed["ray"])  # both kinds of place on this threshold
    assert any(not path.startswith("_review/") for path in placed["ray"])
    assert (tmp_path / "ray" / "_review.csv").read_text() == (tmp_path / "local" / "_review.csv").read_text()
