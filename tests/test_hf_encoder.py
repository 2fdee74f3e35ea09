"""TransformersEncoder against the transformers models it wraps, on tiny random checkpoints.

Every reference value is computed the way transformers' own zero-shot-image-classification
pipeline does it (processor padding, get_*_features), so a drift in either zsclip or in how
transformers expects to be called shows up here.
"""

from __future__ import annotations

import shutil
import warnings

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoProcessor

from zsclip.encoders.hf import TransformersEncoder
from zsclip.errors import ModelLoadError, ZsclipWarning
from zsclip.testing.tiny_hf import save_tiny_clip, save_tiny_siglip

#: Very different token lengths, all shorter than both contexts so that padding choices matter.
PROMPTS = [
    "a cat",
    "a photo of a dog.",
    "this is a photo of the cat, the dog, the bird and the car",
    "car",
    "a photo of a cat, a photo of a dog, a photo of a bird, a photo of a car, all in one photo",
    "a dog!",
]
TOL = 1e-5


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), seed=0)


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return save_tiny_siglip(tmp_path_factory.mktemp("siglip"), seed=0)


@pytest.fixture(scope="module")
def clip(clip_dir):
    return TransformersEncoder.from_pretrained(str(clip_dir), device="cpu")


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    return TransformersEncoder.from_pretrained(str(siglip_dir), device="cpu")


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    sizes = [(32, 32), (50, 40), (24, 60)]
    return [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
            for w, h in sizes]


def _reference(directory):
    return AutoModel.from_pretrained(directory).eval(), AutoProcessor.from_pretrained(directory)


def _pipeline_text_kwargs(model) -> dict:
    """What transformers' zero-shot-image-classification pipeline passes to the tokenizer."""
    if "siglip" in model.config.model_type:
        return dict(padding="max_length", max_length=64, truncation=True)
    return dict(padding=True)


# --- loading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_loads_and_encodes_unit_norm_float32(which, request, images):
    encoder = request.getfixturevalue(which)
    text = encoder.encode_text(PROMPTS, precision="fp32")
    pixels = torch.stack([encoder.preprocess(image) for image in images])
    image = encoder.encode_images(pixels, precision="fp32")
    for features, n in ((text, len(PROMPTS)), (image, len(images))):
        assert features.dtype == torch.float32
        assert features.shape == (n, encoder.embed_dim)
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(n), atol=1e-5, rtol=0)


# --- parity with transformers --------------------------------------------------------------
@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_text_features_match_transformers_pipeline(which, request):
    encoder = request.getfixturevalue(which)
    assert int(encoder.tokenize(PROMPTS).lengths.max()) < encoder.context_length
    model, processor = _reference(request.getfixturevalue(f"{which}_dir"))
    inputs = processor(text=PROMPTS, return_tensors="pt", **_pipeline_text_kwargs(model))
    with torch.inference_mode():
        expected = F.normalize(model.get_text_features(**inputs).pooler_output, dim=-1)
    got = encoder.encode_text(PROMPTS, batch_size=4, precision="fp32")
    assert (got - expected).abs().max() <= TOL


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_image_features_match_transformers(which, request, images):
    encoder = request.getfixturevalue(which)
    model, processor = _reference(request.getfixturevalue(f"{which}_dir"))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = torch.stack([encoder.preprocess(image) for image in images])
    torch.testing.assert_close(ours, pixels, atol=0, rtol=0)
    with torch.inference_mode():
        expected = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    assert (encoder.encode_images(ours, precision="fp32") - expected).abs().max() <= TOL


def test_siglip_text_is_fed_without_attention_mask(siglip):
    """SigLIP was trained unmasked; its processor emits input_ids only, and so must we."""
    tokens = siglip.tokenize(PROMPTS)
    assert tokens.attention_mask is None
    assert tokens.ids.shape == (len(PROMPTS), 64)


# --- dropping padding --------------------------------------------------------------------------
def test_truncates_padding_only_for_causal_eos_pooled_towers(clip, siglip):
    assert clip.truncates_padding is True
    assert siglip.truncates_padding is False


def test_clip_truncation_is_exact(clip, monkeypatch):
    monkeypatch.setattr(clip, "shares_prefixes", False)  # the padding cut alone (shared prefixes: below)
    tokens = clip.tokenize(PROMPTS)
    assert int(tokens.lengths.min()) < 8 and int(tokens.lengths.max()) > 20  # very different lengths
    with torch.inference_mode():
        full = F.normalize(clip._text_forward(tokens), dim=-1)
    widths = []
    forward = clip._text_forward

    def recording_forward(batch):
        widths.append(batch.ids.shape[1])
        return forward(batch)

    monkeypatch.setattr(clip, "_text_forward", recording_forward)
    cut = clip.encode_text(PROMPTS, batch_size=3, precision="fp32")
    assert max(widths) < clip.context_length  # padding really was dropped
    assert (cut - full).abs().max() <= TOL


def test_clip_shares_each_templates_prefix_and_gives_the_full_forward(clip, siglip, monkeypatch):
    from zsclip.encoders import shared_prefix

    assert clip.shares_prefixes and not siglip.shares_prefixes  # SigLIP's tower is bidirectional
    runs = []
    encode = shared_prefix.encode_suffixes

    def recording(parts, ids, pooled, groups, cache):
        runs.append(int((pooled + 1 - cache.lengths[groups]).max()))
        return encode(parts, ids, pooled, groups, cache)

    monkeypatch.setattr(shared_prefix, "encode_suffixes", recording)
    names = ["dog", "great white shark", "cat", "hammerhead shark with a very long name"]
    prompts = [f"a low resolution photo of the {n}." for n in names] + [f"itap of a {n}." for n in names]
    ours = clip.encode_text(prompts, groups=[0] * 4 + [1] * 4, precision="fp32")
    tokens = clip.tokenize(prompts)
    with torch.inference_mode():
        full = F.normalize(clip._text_forward(tokens), dim=-1)  # the model's own forward, all 77 positions
    assert (ours - full).abs().max() <= TOL
    # "<sot> a low resolution photo of the" is computed once, not per prompt
    assert runs and max(runs) <= int(tokens.lengths.max()) - 5


def test_clip_truncation_is_exact_with_legacy_eos_id(clip_dir):
    """Older CLIP configs (e.g. openai/clip-vit-*) say eos_token_id=2 and pool at the highest id."""
    model, processor = _reference(clip_dir)
    model.config.text_config.eos_token_id = model.text_model.eos_token_id = 2
    legacy = TransformersEncoder(model, processor, device="cpu")
    tokens = legacy.tokenize(PROMPTS)
    assert torch.equal(tokens.lengths, tokens.ids.argmax(dim=-1) + 1)
    with torch.inference_mode():
        full = F.normalize(legacy._text_forward(tokens), dim=-1)
    assert (legacy.encode_text(PROMPTS, batch_size=3, precision="fp32") - full).abs().max() <= TOL


def test_clip_lengths_end_at_pooled_token(clip):
    """lengths - 1 is the position CLIPTextTransformer pools at (first end-of-text token)."""
    tokens = clip.tokenize(PROMPTS)
    eos = clip.tokenizer.eos_token_id
    for row, length in zip(tokens.ids, tokens.lengths, strict=True):
        assert row[length - 1] == eos and eos not in row[: length - 1]


def test_siglip_truncation_would_change_features(siglip, monkeypatch):
    """The counter-test: cutting padding is NOT exact for SigLIP, which is why it is off."""
    tokens = siglip.tokenize(PROMPTS)
    longest = int(tokens.lengths.max())
    with torch.inference_mode():
        full = F.normalize(siglip._text_forward(tokens), dim=-1)
        cut = F.normalize(siglip._text_forward(tokens.select(torch.arange(len(PROMPTS)), longest)), dim=-1)
    assert (cut - full).abs().max() > 1e-3
    monkeypatch.setattr(siglip, "truncates_padding", True)
    assert (siglip.encode_text(PROMPTS, precision="fp32") - full).abs().max() > 1e-3


# --- logit scale and bias ----------------------------------------------------------------------
def test_logit_scale_and_bias_match_model(clip, siglip):
    assert clip.logit_scale == pytest.approx(clip.model.logit_scale.exp().item())
    assert clip.logit_bias is None
    assert not clip.is_sigmoid
    assert siglip.logit_scale == pytest.approx(siglip.model.logit_scale.exp().item())
    assert isinstance(siglip.logit_bias, float)
    assert siglip.logit_bias == pytest.approx(siglip.model.logit_bias.item())
    assert siglip.is_sigmoid


# --- fingerprint -----------------------------------------------------------------------------
def test_fingerprint_identifies_weights_not_path(clip, clip_dir, tmp_path):
    again = TransformersEncoder.from_pretrained(str(clip_dir), device="cpu")
    assert again.fingerprint == clip.fingerprint
    copy = shutil.copytree(clip_dir, tmp_path / "copy")
    assert TransformersEncoder.from_pretrained(str(copy), device="cpu").fingerprint == clip.fingerprint
    other = save_tiny_clip(tmp_path / "seed1", seed=1)
    assert TransformersEncoder.from_pretrained(str(other), device="cpu").fingerprint != clip.fingerprint


# --- errors and warnings ---------------------------------------------------------------------
def test_missing_model_offline_is_one_line_model_load_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    name = "zsclip-tests/no-such-clip-model"
    with pytest.raises(ModelLoadError) as caught:
        TransformersEncoder.from_pretrained(name, device="cpu", cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and name in message
    assert "HF_HUB_OFFLINE" in message and "transformers:" in message


def test_missing_local_directory_is_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        TransformersEncoder.from_pretrained(str(tmp_path / "absent"), device="cpu")


def test_non_clip_model_is_rejected(siglip_dir):
    text_only = AutoModel.from_pretrained(siglip_dir).text_model
    with pytest.raises(ModelLoadError, match="not a CLIP-family model"):
        TransformersEncoder(text_only, AutoProcessor.from_pretrained(siglip_dir))


def test_tokenizer_and_image_processor_pair_works_like_processor(clip, clip_dir, images):
    model, processor = _reference(clip_dir)
    paired = TransformersEncoder(model, (processor.tokenizer, processor.image_processor))
    difference = paired.encode_text(PROMPTS, precision="fp32") - clip.encode_text(PROMPTS, precision="fp32")
    assert difference.abs().max() <= TOL
    torch.testing.assert_close(paired.preprocess(images[1]), clip.preprocess(images[1]), atol=0, rtol=0)


def test_missing_processor_is_input_error(clip_dir):
    from zsclip.errors import InputError

    with pytest.raises(InputError, match="processor"):
        TransformersEncoder(AutoModel.from_pretrained(clip_dir))


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_overlong_prompt_warns_once_and_still_encodes(which, request):
    encoder = request.getfixturevalue(which)
    prompts = ["a cat", "a photo of a dog " * 40, "a photo of a bird " * 40]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = encoder.encode_text(prompts, precision="fp32")
    ours = [w for w in caught if issubclass(w.category, ZsclipWarning)]
    assert len(ours) == 1 and "2 prompt(s)" in str(ours[0].message)
    assert features.shape == (3, encoder.embed_dim) and torch.isfinite(features).all()
    assert len(encoder.tokenize(prompts[:1]).ids[0]) == encoder.context_length


def test_prompt_filling_the_context_exactly_does_not_warn(clip):
    """Only prompts the tokenizer actually cut are reported (75 words + start/end = 77 tokens)."""
    exact = " ".join(["cat"] * (clip.context_length - 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZsclipWarning)
        clip.encode_text([exact], precision="fp32")
