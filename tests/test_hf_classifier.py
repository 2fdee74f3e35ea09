"""Classifiers on transformers models: logits equal the model's own, sigmoid for SigLIP, wrap()."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import zsclip
from zsclip.testing.tiny_hf import save_tiny_clip, save_tiny_siglip

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module", params=["clip", "siglip"])
def model_dir(request, tmp_path_factory):
    save = save_tiny_clip if request.param == "clip" else save_tiny_siglip
    return save(tmp_path_factory.mktemp(request.param), seed=0)


def _images():
    return [Image.new("RGB", (40, 30), colour) for colour in ((220, 20, 20), (20, 200, 20), (20, 20, 220))]


def test_logits_equal_the_models_own_logits_per_image(model_dir):
    encoder = zsclip.load_model(f"transformers:{model_dir}", device="cpu")
    clf = zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo", precision="fp32", cache=False)
    pixels = torch.stack([encoder.preprocess(i) for i in _images()])
    ours = clf.logits(encoder.encode_images(pixels, precision="fp32"))
    model = encoder.model
    text = encoder.tokenize([f"a photo of a {label}." for label in LABELS])
    inputs = {"input_ids": text.ids, "pixel_values": pixels}
    if text.attention_mask is not None:
        inputs["attention_mask"] = text.attention_mask
    with torch.no_grad():
        reference = model(**inputs).logits_per_image
    assert (ours - reference).abs().max() <= 1e-4


def _features(encoder):
    return encoder.encode_images(torch.stack([encoder.preprocess(i) for i in _images()]), precision="fp32")


def test_sigmoid_models_score_classes_independently(model_dir):
    encoder = zsclip.load_model(f"transformers:{model_dir}", device="cpu")
    clf = zsclip.ZeroShotClassifier.build(encoder, LABELS, "photo", cache=False)
    probs = clf.probabilities(_features(encoder))
    if encoder.logit_bias is None:  # CLIP: softmax
        assert not clf.is_sigmoid and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    else:  # SigLIP: sigmoid with the model's bias
        assert clf.is_sigmoid and clf.logit_bias == pytest.approx(encoder.logit_bias)
        assert torch.allclose(probs, torch.sigmoid(clf.logits(_features(encoder))))


def test_wrap_a_transformers_model_and_processor(model_dir):
    model = AutoModel.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    wrapped = zsclip.wrap(model, processor)
    loaded = zsclip.load_model(f"transformers:{model_dir}", device="cpu")
    assert wrapped.fingerprint == loaded.fingerprint
    a = zsclip.ZeroShotClassifier.build(wrapped, LABELS, "photo", cache=False).predict(_images(), top_k=2)
    b = zsclip.ZeroShotClassifier.build(loaded, LABELS, "photo", cache=False).predict(_images(), top_k=2)
    assert [[label for label, _ in row] for row in a] == [[label for label, _ in row] for row in b]
