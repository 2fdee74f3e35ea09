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
