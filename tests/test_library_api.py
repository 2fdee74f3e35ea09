"""The public Python API that every entry point wraps: classify, evaluate, resolve_classifier, RunOptions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import zsclip
from zsclip import InputError, RunOptions, ZeroShotClassifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FP32 = RunOptions(precision="fp32", workers=0)


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def labels():
    return zsclip.read_labels(EXAMPLES / "labels.txt")


@pytest.fixture
def messy_folder(tmp_path):
    """Three example pictures, an empty file and a file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("red_triangle.png", "blue_star.png", "green_circle.png"):
        shutil.copy(EXAMPLES / name, folder / name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    return folder


@pytest.mark.slow
def test_classify_from_python_reports_bad_files_and_classifies_the_rest(demo, labels, messy_folder):
    rows = list(zsclip.classify([messy_folder, "no/such/file.png"], labels, encoder=demo, top_k=2, options=FP32))
    by_name = {Path(row.source).name: row for row in rows}
    assert list(by_name) == ["blue_star.png", "empty.png", "green_circle.png", "notes.jpg", "red_triangle.png",
                             "file.png"]  # folder sorted, then the next input, in order
    assert by_name["empty.png"].error == "empty file" and by_name["empty.png"].labels == []
    assert "not an image" in by_name["notes.jpg"].error
    assert "no such file" in by_name["file.png"].error
    for name in ("blue_star.png", "green_circle.png", "red_triangle.png"):
        row = by_name[name]
        assert row.error is None and row.labels[0] == name.removesuffix(".png").replace("_", " ")
        assert len(row.labels) == 2 and row.scores[0] >= row.scores[1]


def test_classify_with_a_classifier_equals_predict(demo, labels, messy_folder):
    clf = ZeroShotClassifier.build(demo, labels, "photo", precision="fp32", cache=False)
    good = sorted(messy_folder.glob("*_*.png"))
    rows = list(zsclip.classify(good, classifier=clf, top_k=3, options=FP32))
    predicted = clf.predict(good, top_k=3, precision="fp32")
    assert [list(zip(r.labels, r.scores, strict=True)) for r in rows] == [list(p) for p in predicted]


def test_evaluate_from_a_path_equals_evaluate_on_the_opened_collection(demo, tmp_path):
    from zsclip import shapes

    manifest = shapes.write_dataset(tmp_path / "data", per_class=2, seed=5, split="seen", label="shape")
    by_path = zsclip.evaluate(manifest, demo, "photo", options=FP32, cache=False)
    collection, _ = zsclip.open_collection(manifest)
    by_collection = zsclip.evaluate(collection, demo, ["photo"], options=FP32, cache=False)
    assert by_path.metrics == by_collection.metrics and by_path.num_images == len(collection.items)
    assert by_path.metrics["photo"]["acc1"] >= 0.9


def test_bad_labels_fail_before_any_model_is_loaded(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the labels were checked")

    monkeypatch.setattr(zsclip.encoders.resolve, "load_model", no_loading)
    with pytest.raises(InputError, match="given twice"):
        zsclip.resolve_classifier(["dog", "Dog"], model="demo")
    with pytest.raises(InputError, match="no labels"):
        zsclip.resolve_classifier(None, model="demo")
    with pytest.raises(InputError, match="not both"):
        zsclip.resolve_classifier(["dog"], classifier="pets.zsc")


def test_a_classifier_file_brings_its_model_and_refuses_another(demo, tiny_clip, tmp_path):
    path = ZeroShotClassifier.build(demo, ["red circle", "blue star"], "photo", cache=False).save(tmp_path / "c.zsc")
    encoder, clf = zsclip.resolve_classifier(classifier=path)  # the model named in the file: demo
    assert encoder.fingerprint == demo.fingerprint and clf.encoder is encoder
    with pytest.raises(zsclip.ClassifierFileError, match="rebuild it with this model"):
        zsclip.resolve_classifier(classifier=path, encoder=tiny_clip)


@pytest.mark.parametrize("settings, message", [
    ({"precision": "fp64"}, "unknown precision"),
    ({"batch_size": 0}, "batch size"),
    ({"workers": -1}, "workers"),
    ({"max_pixels": 0}, "max pixels"),
])
def test_run_options_refuse_bad_settings_in_one_line(settings, message):
    with pytest.raises(InputError, match=message):
        RunOptions(**settings)


def test_run_options_have_one_precision_default():
    import inspect

    from zsclip.encoders.base import Encoder
    from zsclip.precision import DEFAULT_PRECISION

    assert RunOptions().precision == DEFAULT_PRECISION == "auto"
    for function in (Encoder.encode_images, Encoder.encode_text, ZeroShotClassifier.build):
        assert inspect.signature(function).parameters["precision"].default == DEFAULT_PRECISION
