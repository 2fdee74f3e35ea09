"""Explanations on Ray (issue 35, "Ray for folders"): `zsclip explain --ray` and `zsclip classify --explain --ray`
on a real local Ray instance give the local run's labels, scores and heatmaps (read back from the .npy files
and explained.jsonl), with a broken image reported and skipped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("ray")

from zsclip.cli import main  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_ends_with_the_module")]  # a local Ray and its actors

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMON = ["--model", "demo", "--precision", "fp32", "-t", "photo"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain_ray")
    for path in sorted(EXAMPLES.glob("*.png"))[:9]:  # two chunks of 8 and one more: order across chunks
        shutil.copy(path, root / path.name)
    (root / "broken.png").write_bytes(b"not an image")
    return root


def run(*args) -> object:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def index(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "explained.jsonl").read_text().splitlines()]


def same_explanations(local: Path, remote: Path) -> None:
    here, there = index(local), index(remote)
    assert [(r["source"], r["label"], r["png"]) for r in here] == [(r["source"], r["label"], r["png"]) for r in there]
    assert len(here) >= 9
    for mine, theirs in zip(here, there, strict=True):
        assert theirs["score"] == pytest.approx(mine["score"], abs=1e-5)
        a, b = np.load(local / mine["npy"]), np.load(remote / theirs["npy"])
        assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-4


@pytest.fixture()
def chunks_on_ray(monkeypatch) -> list[int]:
    """How many chunks the Ray runner answered (so an ignored --ray cannot pass for an equal answer)."""
    import zsclip.cluster.explain as on_ray

    answered: list[int] = []
    real = on_ray.ray_explanations

    def counted(*args, **kwargs):
        for batch in real(*args, **kwargs):
            answered.append(len(batch))
            yield batch

    monkeypatch.setattr(on_ray, "ray_explanations", counted)
    return answered


def test_explain_on_ray_equals_the_local_run(images, tmp_path, chunks_on_ray):
    labels = str(EXAMPLES / "labels.txt")
    local = run("explain", images, "--labels-file", labels, *COMMON, "-k", "2", "-o", tmp_path / "local")
    remote = run("explain", images, "--labels-file", labels, *COMMON, "-k", "2", "-o", tmp_path / "ray",
                 "--ray", "auto", "--method", "patch")
    assert local.exit_code == remote.exit_code == 1, remote.output  # the broken image: reported, the rest done
    assert "broken.png" in remote.stderr
    assert chunks_on_ray == [8, 2]  # 10 inputs, EXPLAIN_BATCH at a time, all through the Ray actors
    same_explanations(tmp_path / "local", tmp_path / "ray")


def test_classify_explain_on_ray_gives_the_local_rows_and_heatmaps(images, tmp_path, chunks_on_ray):
    labels = str(EXAMPLES / "labels.txt")
    for where, extra in (("local", []), ("ray", ["--ray", "auto"])):
        result = run("classify", images, "--labels-file", labels, *COMMON, "-k", "1", "-o", tmp_path / f"{where}.csv",
                     "--explain", tmp_path / where, "--method", "gradcam", *extra)
        assert result.exit_code == 1 and "broken.png" in result.stderr, result.output
        assert sum(chunks_on_ray) == (10 if where == "ray" else 0)
    rows = {where: list(csv.DictReader((tmp_path / f"{where}.csv").open())) for where in ("local", "ray")}
    assert [(r["path"], r["label"], bool(r["error"])) for r in rows["local"]] == \
           [(r["path"], r["label"], bool(r["error"])) for r in rows["ray"]]
    same_explanations(tmp_path / "local", tmp_path / "ray")
