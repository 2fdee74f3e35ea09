"""precision="int8": a dynamically quantized image tower on CPU, exact text towers, clear refusals."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import zsclip
from zsclip import ZeroShotClassifier, shapes
from zsclip.cli import main
from zsclip.encoders.hf import TransformersEncoder
from zsclip.encoders.int8 import int8_image_copy
from zsclip.errors import InputError
from zsclip.precision import resolve_precision
from zsclip.testing.tiny_hf import save_tiny_clip

LABELS = ["red", "green", "blue"]


def _quantized(module: torch.nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]


def _pixels(encoder, count: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.stack([encoder.preprocess(Image.fromarray(
        (torch.rand(48, 48, 3) * 255).byte().numpy())) for _ in range(count)])


def test_open_clip_int8_quantizes_only_the_image_towers_mlp_and_stays_close(tiny_clip):
    pixels = _pixels(tiny_clip)
    exact = tiny_clip.encode_images(pixels, "fp32")
    int8 = tiny_clip.encode_images(pixels, "int8")
    assert F.cosine_similarity(exact, int8).min() > 0.99
    assert not torch.equal(exact, int8)  # it really ran the quantized tower
    twin = tiny_clip._int8.model
    names = _quantized(twin)
    assert names and all(n.startswith("visual.") for n in names)
    assert any(n.endswith("mlp.c_fc") for n in names)
    assert not any("attn.out_proj" in n for n in names)  # MultiheadAttention uses its weight directly
    # the user's model is untouched, and the twin shares every float tensor with it (no second copy)
    assert _quantized(tiny_clip.model) == []
    assert twin.token_embedding.weight is tiny_clip.model.token_embedding.weight
    assert twin.visual.conv1.weight is tiny_clip.model.visual.conv1.weight
    assert torch.equal(tiny_clip.encode_images(pixels, "fp32"), exact)


def test_transformers_int8_quantizes_attention_projections_too(tmp_path):
    encoder = TransformersEncoder.from_pretrained(str(save_tiny_clip(tmp_path / "clip")), device="cpu")
    pixels = _pixels(encoder)
    exact, int8 = encoder.encode_images(pixels, "fp32"), encoder.encode_images(pixels, "int8")
    assert F.cosine_similarity(exact, int8).min() > 0.99
    names = _quantized(encoder._int8.model)
    assert any(n.endswith("self_attn.q_proj") for n in names) and "visual_projection" in names
    assert not any(n.startswith("text_model") for n in names)


def test_int8_classifiers_are_the_exact_fp32_ones(tiny_clip, isolated_cache):
    fp32 = ZeroShotClassifier.build(tiny_clip, LABELS, "photo", precision="fp32")
    int8 = ZeroShotClassifier.build(tiny_clip, LABELS, "photo", precision="int8")
    assert torch.equal(fp32.weights, int8.weights)
    assert int8.provenance["precision"] == "fp32"
    assert len(list(isolated_cache.glob("*.zsc"))) == 1  # one cache entry serves both


def test_int8_is_refused_off_cpu_and_for_convolutional_towers():
    with pytest.raises(InputError, match="int8 is for CPUs"):
        resolve_precision("int8", "cuda")
    demo = zsclip.load_model("demo", device="cpu")  # a ResNet tower: nothing for dynamic int8
    with pytest.raises(InputError, match="convolutional tower"):
        demo.encode_images(_pixels(demo, 2), "int8")


def test_int8_refuses_half_precision_towers_and_towers_that_break_once_quantized(tiny_clip):
    half = zsclip.wrap(copy.deepcopy(tiny_clip.model).half(), tiny_clip.tokenizer, tiny_clip._preprocess)
    with pytest.raises(InputError, match="quantizes float32 image towers"):
        half.encode_images(_pixels(tiny_clip, 2), "int8")

    class ReadsItsWeight(torch.nn.Module):  # calls the layer *and* reads its .weight tensor
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.visual(x) + self.visual.weight.sum()

    model = ReadsItsWeight()
    with pytest.raises(InputError, match="does not work with this image tower"):
        int8_image_copy(model, ("visual",), probe=lambda m: m(torch.randn(2, 4)))
    assert type(model.visual) is torch.nn.Linear  # the user's model is left as it was


def test_cli_classifies_with_int8(tiny_clip_dir, tmp_path, monkeypatch):
    import zsclip.encoders.int8

    built = []
    real = zsclip.encoders.int8.int8_image_copy
    monkeypatch.setattr(zsclip.encoders.int8, "int8_image_copy", lambda *a, **k: built.append(1) or real(*a, **k))
    for index, spec in enumerate(shapes.sample_specs(4, seed=1)):
        shapes.render(spec, 64).save(tmp_path / f"{index}.png")
    out = {}
    for precision in ("fp32", "int8"):
        out[precision] = tmp_path / f"{precision}.csv"
        result = CliRunner().invoke(main, ["classify", str(tmp_path), "--model", tiny_clip_dir, "--labels",
                                           ",".join(LABELS), "--templates", "photo", "--workers", "0",
                                           "--precision", precision, "--output", str(out[precision])])
        assert result.exit_code == 0, result.output
    assert built == [1]  # the int8 run really quantized its tower (once), the fp32 run did not
    rows = {p: list(csv.DictReader(out[p].open())) for p in out}
    assert len(rows["int8"]) == 4 and all(r["error"] == "" for r in rows["int8"])
    for exact, quantized in zip(rows["fp32"], rows["int8"], strict=True):
        assert abs(float(exact["score"]) - float(quantized["score"])) < 0.05
