"""Calibration and the collection-level correction on Ray (issue 34): `zsclip calibrate --ray`, `classify
--transductive --ray` and `eval --transductive --ray` on a real local Ray instance give the local run's fitted
temperature, rows and metrics (the correction runs on the driver's scores, so Ray only changes who encodes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ray")

import zsclip  # noqa: E402
from zsclip import shapes  # noqa: E402
from zsclip.cli import main  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_ends_with_the_module")]  # a local Ray and its actors

COMMON = ["--model", "demo", "--precision", "fp32"]
RAY = ["--ray", "auto"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calibration_ray")
    shapes.write_dataset(root / "calibration", per_class=1, seed=41)
    shapes.write_dataset(root / "photos", per_class=1, seed=42)
    demo = zsclip.load_model("demo", device="cpu")
    labels = zsclip.read_labels(root / "photos" / "labels.txt")
    zsclip.ZeroShotClassifier.build(demo, labels, "photo", cache=False).save(root / "flat.zsc")
    return root


def run(*args) -> object:
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_calibrate_on_ray_fits_the_local_temperature(world, tmp_path):
    from zsclip.classifier.files import load_flat

    for where, extra in (("local", []), ("ray", RAY)):
        run("calibrate", "--data", world / "calibration" / "manifest.csv", "-c", world / "flat.zsc", *COMMON,
            "-o", tmp_path / f"{where}.zsc", *extra)
    local, remote = (load_flat(tmp_path / f"{where}.zsc") for where in ("local", "ray"))
    assert local.calibration["temperature"] == pytest.approx(remote.calibration["temperature"], rel=1e-4)
    assert local.calibration["fitted_on"]["num_images"] == remote.calibration["fitted_on"]["num_images"] > 0


@pytest.mark.parametrize("method", ["em", "ot"])
def test_transductive_classify_and_eval_on_ray_equal_the_local_runs(world, tmp_path, method):
    images = world / "photos" / "images"
    rows, metrics = {}, {}
    for where, extra in (("local", []), ("ray", RAY)):
        run("classify", images, "-c", world / "flat.zsc", *COMMON, "--transductive", method, "-k", "1",
            "-o", tmp_path / f"{where}.csv", *extra)
        with open(tmp_path / f"{where}.csv", newline="") as handle:
            rows[where] = [(r["path"], r["label"], float(r["score"])) for r in csv.DictReader(handle)]
        run("eval", "--data", world / "photos" / "manifest.csv", "-c", world / "flat.zsc", *COMMON,
            "--transductive", method, "-o", tmp_path / f"{where}.json", *extra)
        metrics[where] = json.loads((tmp_path / f"{where}.json").read_text())
    assert [r[:2] for r in rows["ray"]] == [r[:2] for r in rows["local"]] and rows["local"]
    for (_, _, mine), (_, _, theirs) in zip(rows["local"], rows["ray"], strict=True):
        assert theirs == pytest.approx(mine, abs=1e-5)
    local, remote = metrics["local"], metrics["ray"]
    assert local["transductive"]["method"] == remote["transductive"]["method"] == method
    assert remote["metrics"] == pytest.approx(local["metrics"], abs=1e-6)
    assert remote["transductive"]["metrics"] == pytest.approx(local["transductive"]["metrics"], abs=1e-6)
    assert remote["transductive"]["prior"] == pytest.approx(local["transductive"]["prior"], abs=1e-5)
