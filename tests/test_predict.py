"""Prediction: logits, softmax / sigmoid, temperature, top-k, and image inputs of every kind."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from zsclip import ClassifierFileError, InputError, ZeroShotClassifier, ZsclipWarning

CLASSES = ["dog", "cat", "bird", "car", "airplane", "tree"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(3)
    paths = []
    for i in range(5):
        pixels = (torch.rand(48, 64, 3, generator=generator) * 255).byte().numpy()
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def classifier(tiny_clip):
    return ZeroShotClassifier.build(tiny_clip, CLASSES, "openai-imagenet-7", precision="fp32", cache=False)


def _features(tiny_clip, paths):
    pixels = torch.stack([tiny_clip.preprocess(Image.open(p).convert("RGB")) for p in paths])
    return tiny_clip.encode_images(pixels, precision="fp32"), pixels


def test_predict_matches_the_seed_formula(classifier, tiny_clip, images):
    features, _ = _features(tiny_clip, images)
    expected = (tiny_clip.logit_scale * features @ classifier.weights).softmax(dim=-1)
    results = classifier.predict(images, top_k=3, precision="fp32")
    assert len(results) == len(images)
    for row, probs in zip(results, expected, strict=True):
        values, indices = probs.topk(3)
        assert [label for label, _ in row] == [CLASSES[i] for i in indices]
        assert [p for _, p in row] == pytest.approx(values.tolist(), abs=1e-6)
        assert row[0][1] >= row[1][1] >= row[2][1]


def test_paths_pil_images_and_tensors_give_the_same_answer(classifier, tiny_clip, images):
    _, pixels = _features(tiny_clip, images)
    by_path = classifier.predict(images, top_k=2, precision="fp32")
    by_str = classifier.predict([str(p) for p in images], top_k=2, precision="fp32")
    by_pil = classifier.predict([Image.open(p) for p in images], top_k=2, precision="fp32")
    by_tensor = classifier.predict(pixels, top_k=2, precision="fp32")
    assert by_path == by_str == by_pil
    assert [[label for label, _ in row] for row in by_tensor] == [[label for label, _ in row] for row in by_path]
    (single,) = classifier.predict(images[0], top_k=1, precision="fp32")
    assert single[0][0] == by_path[0][0][0] and single[0][1] == pytest.approx(by_path[0][0][1], abs=1e-5)


def test_fixed_scale_and_top_k_bounds(classifier, tiny_clip, images):
    features, _ = _features(tiny_clip, images)
    sharp = classifier.probabilities(features, scale=100.0)
    flat = classifier.probabilities(features, scale=1.0)
    assert torch.allclose(sharp, (100.0 * features @ classifier.weights).softmax(-1))
    assert flat.max() < sharp.max()
    assert len(classifier.predict(images[:1], top_k=50)[0]) == len(CLASSES)
    assert len(classifier.predict(images[:1], top_k=0)[0]) == 1


def test_build_with_fixed_logit_scale(tiny_clip):
    clf = ZeroShotClassifier.build(tiny_clip, CLASSES, "photo", logit_scale=100.0)
    assert clf.logit_scale == 100.0
    again = ZeroShotClassifier.build(tiny_clip, CLASSES, "photo")  # cache hit keeps the model's own scale
    assert again.logit_scale == pytest.approx(tiny_clip.logit_scale)


def test_sigmoid_models_use_sigmoid_with_bias(classifier, tiny_clip, images):
    features, _ = _features(tiny_clip, images)
    sigmoid = ZeroShotClassifier(classifier.weights, classifier.classnames, classifier.synonyms,
                                 logit_scale=10.0, logit_bias=-5.0)
    probs = sigmoid.probabilities(features)
    assert torch.allclose(probs, torch.sigmoid(10.0 * features @ classifier.weights - 5.0))
    assert not torch.allclose(probs.sum(dim=-1), torch.ones(len(images)))


def test_loaded_classifier_needs_its_own_model(classifier, tiny_clip, tiny_clip_other_dir, images, tmp_path):
    import zsclip

    loaded = ZeroShotClassifier.load(classifier.save(tmp_path / "c.zsc"))
    with pytest.raises(InputError, match="no model attached"):
        loaded.predict(images)
    assert loaded.predict(images, encoder=tiny_clip) == classifier.predict(images)
    other = zsclip.load_model(tiny_clip_other_dir, device="cpu")
    with pytest.raises(ClassifierFileError, match="rebuild it with this model"):
        loaded.predict(images, encoder=other)


def test_an_unreadable_image_gets_an_error_row_and_the_rest_are_predicted(classifier, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.warns(ZsclipWarning, match="broken.jpg"):
        rows = classifier.predict([images[0], bad, images[1]], top_k=2, precision="fp32")
    assert [len(row) for row in rows] == [2, 0, 2]
    assert rows[1].error and "not an image" in rows[1].error and rows[1].source == str(bad)
    for row, image in ((rows[0], images[0]), (rows[2], images[1])):  # a batch of 2 vs 1: equal to float rounding
        alone = classifier.predict(image, top_k=2, precision="fp32")[0]
        assert row.error is None and [label for label, _ in row] == [label for label, _ in alone]
        assert [score for _, score in row] == pytest.approx([score for _, score in alone], abs=1e-6)
