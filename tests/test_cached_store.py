"""A store answers without its model (issue 23): the store's manifest names its model's fingerprint, so a
classifier cached for (fingerprint, labels, templates, precision) classifies and evaluates the store with no
model loaded. Only new labels load the model, and say why."""

from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

import zsclip
from zsclip import shapes
from zsclip.cli import main

LABELS = "red circle,blue square,green star,yellow ring"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A labelled store of 12 demo-world images, embedded with the demo model."""
    root = tmp_path_factory.mktemp("cached_store")
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "ring")):
        folder = root / "photos" / f"{colour} {shape}"
        folder.mkdir(parents=True)
        for index, spec in enumerate(shapes.sample_specs(3, seed=len(colour) + 3 * len(shape))):
            spec = shapes.ShapeSpec(colour, shape, spec.background, spec.radius, spec.centre, spec.rotation)
            shapes.render(spec).save(folder / f"{index}.png")
    out = str(root / "photos.zse")
    result = CliRunner().invoke(main, ["embed", str(root / "photos"), "--labelled", "-o", out, "-m", "demo", "-j",
                                       "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def no_model(monkeypatch):
    """From now on, loading any model fails loudly."""

    class ModelLoaded(Exception):
        pass

    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded")

    monkeypatch.setattr(zsclip.encoders.resolve, "load_model", refuse)
    return ModelLoaded


def _run(*args: str) -> CliRunner:
    return CliRunner().invoke(main, list(args))


def test_cached_labels_classify_and_evaluate_a_store_with_no_model(store, tmp_path, monkeypatch):
    first = _run("classify", store, "--labels", LABELS, "-t", "photo", "-o", str(tmp_path / "first.csv"))
    assert first.exit_code == 0, first.output
    evaluated = _run("eval", "--data", store, "-t", "photo", "-o", str(tmp_path / "first.json"))
    assert evaluated.exit_code == 0, evaluated.output

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(zsclip.encoders.resolve, "load_model", refuse)
    monkeypatch.setattr(importlib.import_module("zsclip.job.plan"), "_verbose", lambda: True)
    again = _run("classify", store, "--labels", LABELS, "-t", "photo", "-o", str(tmp_path / "again.csv"))
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "first.csv").read_text()
    assert "cached for demo: no model loaded" in again.stderr and "no model loaded" in again.stderr
    evaluated = _run("eval", "--data", store, "-t", "photo", "-o", str(tmp_path / "again.json"))
    assert evaluated.exit_code == 0, evaluated.output
    metrics = [json.loads((tmp_path / name).read_text())["metrics"] for name in ("first.json", "again.json")]
    assert metrics[0] == metrics[1] and metrics[0]["acc1"] >= 0.75
    rows = list(zsclip.classify(store, LABELS.split(","), templates="photo", top_k=2))  # the Python API too
    assert len(rows) == 12 and sum(row.labels[0] == row.source.split("/")[-2] for row in rows) >= 9


def test_new_labels_load_the_model_and_say_why(store, tmp_path, monkeypatch, no_model):
    monkeypatch.setattr(importlib.import_module("zsclip.job.plan"), "_verbose", lambda: True)
    with pytest.raises(no_model):
        list(zsclip.classify(store, ["red circle", "purple star"], templates="photo"))
    loud = _run("--debug", "classify", store, "--labels", "red circle,purple star", "-t", "photo")
    assert isinstance(loud.exception, no_model)
    assert "loading model demo for its text tower" in loud.stderr
    assert "labels not in the classifier cache" in loud.stderr


def test_other_templates_and_no_cache_load_the_model(store, monkeypatch):
    assert _run("classify", store, "--labels", LABELS, "-t", "photo").exit_code == 0  # fills the cache

    class ModelLoaded(Exception):
        pass

    monkeypatch.setattr(zsclip.encoders.resolve, "load_model", lambda *a, **k: (_ for _ in ()).throw(ModelLoaded()))
    assert _run("classify", store, "--labels", LABELS, "-t", "photo").exit_code == 0
    for extra in (["-t", "openai-imagenet-7"], ["-t", "photo", "--no-cache"], ["-t", "photo", "--precision", "fp16"]):
        result = _run("--debug", "classify", store, "--labels", LABELS, *extra)
        assert isinstance(result.exception, ModelLoaded), (extra, result.output)


def test_cached_lookup_matches_what_build_stores(tmp_path):
    demo = zsclip.load_model("demo", device="cpu")
    built = zsclip.ZeroShotClassifier.build(demo, ["red circle", "blue star"], "photo")
    hit = zsclip.ZeroShotClassifier.cached(demo.fingerprint, ["red circle", "blue star"], "photo", device="cpu")
    assert hit is not None and hit.encoder is None and bool((hit.weights == built.weights).all())
    assert zsclip.ZeroShotClassifier.cached(demo.fingerprint, ["red circle", "blue star"], "photo", device="cpu",
                                            precision="fp16") is None  # another precision is another build
    assert zsclip.ZeroShotClassifier.cached("0" * 16, ["red circle", "blue star"], "photo", device="cpu") is None


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails: the cached path must not need it
from zsclip.cli import main
main(sys.argv[1:], prog_name="zsclip")
"""


def test_cached_labels_answer_a_store_without_importing_torch(store, tmp_path):
    """The cached path reads the store and the classifier file with pyarrow/numpy and answers in numpy: a
    fresh interpreter in which torch cannot be imported gives the same rows as the run that built the classifier
    (through the model); numpy's scores equal torch's on the same features; the images get the same labels."""
    import os
    import subprocess
    import sys

    first = _run("classify", store, "--labels", LABELS, "-t", "photo", "-o", str(tmp_path / "first.csv"))
    assert first.exit_code == 0, first.output
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "classify", store, "--labels", LABELS, "-t", "photo",
                           "-o", str(tmp_path / "light.csv")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "light.csv").read_text() == (tmp_path / "first.csv").read_text()
    # the numpy twin of the torch math, on the same stored features: equal up to float32 rounding
    import numpy as np
    import torch

    from zsclip.job import open_source

    classifier = zsclip.ZeroShotClassifier.build(zsclip.load_model("demo"), LABELS.split(","), "photo")
    features = np.concatenate([batch.values for batch in open_source(store).batches(None, zsclip.RunOptions())])
    assert isinstance(features, np.ndarray) and features.shape == (12, classifier.embed_dim)
    (array_scores, array_indices), (scores, indices) = (classifier.top_k(features, 4),
                                                        classifier.top_k(torch.from_numpy(features), 4))
    assert (array_indices == indices.numpy()).all() and np.abs(array_scores - scores.numpy()).max() < 2e-6
    # and the images themselves, encoded by the model, get the labels the (float16) store gets
    rows = {row.source: row for row in zsclip.classify(store, LABELS.split(","), templates="photo", top_k=4)}
    images = list(zsclip.classify(os.path.join(os.path.dirname(store), "photos"), LABELS.split(","),
                                  templates="photo", top_k=4, model="demo"))
    assert len(images) == len(rows) == 12
    for image in images:
        stored = rows[image.source]
        assert stored.labels[0] == image.labels[0]
        assert max(abs(a - b) for a, b in zip(stored.scores, image.scores, strict=True)) < 1e-3
