"""Classifier build: reference parity, prompt ensembling, synonyms, precision."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

import zsclip
from zsclip import ZeroShotClassifier

CLASSES = list(IMAGENET_CLASSNAMES[:25])


def _reference(encoder, classnames, templates):
    with torch.no_grad():
        return open_clip.build_zero_shot_classifier(encoder.model, encoder.tokenizer, classnames, templates,
                                                    num_classes_per_batch=10, device="cpu")


@pytest.mark.parametrize("template_set, reference_templates", [
    ("openai-imagenet", OPENAI_IMAGENET_TEMPLATES), ("openai-imagenet-7", SIMPLE_IMAGENET_TEMPLATES)])
def test_fp32_build_matches_open_clip_reference(tiny_clip, template_set, reference_templates):
    ours = ZeroShotClassifier.build(tiny_clip, CLASSES, template_set, precision="fp32", cache=False)
    reference = _reference(tiny_clip, CLASSES, reference_templates)
    assert ours.weights.shape == reference.shape == (tiny_clip.embed_dim, len(CLASSES))
    assert ours.weights.dtype == torch.float32
    assert (ours.weights - reference).abs().max() <= 1e-5


def test_fp32_build_matches_reference_on_bidirectional_tower(tiny_bidir):
    ours = ZeroShotClassifier.build(tiny_bidir, CLASSES[:10], "openai-imagenet-7", precision="fp32", cache=False)
    reference = _reference(tiny_bidir, CLASSES[:10], SIMPLE_IMAGENET_TEMPLATES)
    assert (ours.weights - reference).abs().max() <= 1e-5


def test_string_templates_match_reference_and_columns_are_unit_norm(tiny_clip):
    templates = ["a photo of a {}.", "a drawing of the {}.", "{}"]
    ours = ZeroShotClassifier.build(tiny_clip, CLASSES, templates, precision="fp32", cache=False)
    assert (ours.weights - _reference(tiny_clip, CLASSES, templates)).abs().max() <= 1e-5
    assert torch.allclose(ours.weights.norm(dim=0), torch.ones(len(CLASSES)), atol=1e-5)


def test_callable_templates_match_string_templates(tiny_clip):
    callables = [lambda c: f"a photo of a {c}.", lambda c: f"art of the {c}."]
    strings = ["a photo of a {}.", "art of the {}."]
    a = ZeroShotClassifier.build(tiny_clip, CLASSES[:5], callables, precision="fp32", cache=False)
    b = ZeroShotClassifier.build(tiny_clip, CLASSES[:5], strings, precision="fp32", cache=False)
    assert torch.equal(a.weights, b.weights) and a.provenance["templates"] == strings


def test_fp16_build_agrees_with_fp32(tiny_clip):
    fp32 = ZeroShotClassifier.build(tiny_clip, CLASSES, "openai-imagenet-7", precision="fp32", cache=False)
    fp16 = ZeroShotClassifier.build(tiny_clip, CLASSES, "openai-imagenet-7", precision="fp16", cache=False)
    assert (fp32.weights * fp16.weights).sum(dim=0).min() >= 0.999 and fp16.provenance["precision"] == "fp16"


def test_prompt_ensemble_semantics(tiny_clip):
    templates = ["a photo of a {}.", "a blurry photo of a {}.", "art of the {}."]
    prompts = [t.format("goldfish") for t in templates]
    per_prompt = tiny_clip.encode_text(prompts, precision="fp32")
    expected = F.normalize(per_prompt.mean(dim=0), dim=0)
    clf = ZeroShotClassifier.build(tiny_clip, ["goldfish", "tench"], templates, precision="fp32", cache=False)
    assert torch.allclose(clf.weights[:, 0], expected, atol=1e-6)


def test_synonyms_join_their_class_mean(tiny_clip):
    templates = ["a photo of a {}.", "itap of a {}."]
    clf = ZeroShotClassifier.build(tiny_clip, [["dog", "puppy"], "cat"], templates, precision="fp32", cache=False)
    prompts = [t.format(n) for n in ("dog", "puppy") for t in templates]
    expected = F.normalize(tiny_clip.encode_text(prompts, precision="fp32").mean(dim=0), dim=0)
    assert torch.allclose(clf.weights[:, 0], expected, atol=1e-6)
    assert clf.classnames == ["dog", "cat"] and clf.synonyms == [["dog", "puppy"], ["cat"]]


def test_repeated_prompts_keep_their_weight_in_the_mean(tiny_clip):
    # "{}" and "{}." give different prompts; listing one twice must count twice, as in the reference
    templates = ["a photo of a {}.", "a photo of a {}.", "itap of a {}."]
    ours = ZeroShotClassifier.build(tiny_clip, CLASSES[:5], templates, precision="fp32", cache=False)
    assert (ours.weights - _reference(tiny_clip, CLASSES[:5], templates)).abs().max() <= 1e-5


def test_imagenet_class_list_by_name(tiny_clip):
    clf = ZeroShotClassifier.build(tiny_clip, "imagenet1k", "photo", precision="fp32", cache=False)
    assert clf.classnames == list(IMAGENET_CLASSNAMES) and clf.weights.shape[1] == 1000
    assert clf.provenance["named_class_list"] == "imagenet1k"


def test_bf16_build_agrees_with_fp32(tiny_clip):
    fp32 = ZeroShotClassifier.build(tiny_clip, CLASSES, "openai-imagenet-7", precision="fp32", cache=False)
    bf16 = ZeroShotClassifier.build(tiny_clip, CLASSES, "openai-imagenet-7", precision="bf16", cache=False)
    cosine = (fp32.weights * bf16.weights).sum(dim=0)
    assert cosine.min() >= 0.999
    assert not torch.equal(fp32.weights, bf16.weights)  # bf16 really ran
    assert bf16.provenance["precision"] == "bf16" and fp32.provenance["precision"] == "fp32"


def test_auto_precision_is_fp32_on_every_cpu(tiny_clip, monkeypatch):
    """One meaning of "auto" (issue 32 item 10): fp32 on a CPU whatever its bf16 support, so no entry point or
    machine scores an image differently; bf16 stays available when asked for."""
    assert ZeroShotClassifier.build(tiny_clip, ["a", "b"], "photo", cache=False).provenance["precision"] == "fp32"
    assert zsclip.precision.resolve_precision("auto", "cpu") == "fp32"
    assert zsclip.precision.known_without_torch("auto", "cpu") == "fp32"
    assert ZeroShotClassifier.build(tiny_clip, ["a", "b"], "photo", cache=False,
                                    precision="bf16").provenance["precision"] == "bf16"


def test_provenance_records_model_templates_and_version(tiny_clip):
    clf = ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "openai-imagenet-7", cache=False)
    assert clf.provenance["fingerprint"] == tiny_clip.fingerprint
    assert clf.provenance["templates"][0] == "itap of a {}." and len(clf.provenance["templates"]) == 7
    assert clf.provenance["zsclip_version"] == zsclip.__version__
    assert clf.logit_scale == pytest.approx(tiny_clip.logit_scale)
