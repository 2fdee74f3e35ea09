"""Heatmaps (zsclip.heatmaps, issue 35): every tower kind and method, the demo world's pointing game, and the
entry points (zsclip explain, classify --explain, zsclip.explain) read back as a user would."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import zsclip
from zsclip import shapes
from zsclip.heatmaps import METHODS, image_heatmaps
from zsclip.heatmaps.towers import dense_tower


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    from zsclip.testing.tiny_hf import save_tiny_clip, save_tiny_siglip

    root = tmp_path_factory.mktemp("hf_explain")
    return {kind: zsclip.load_model(f"transformers:{save(root / kind)}", device="cpu")
            for kind, save in (("clip", save_tiny_clip), ("siglip", save_tiny_siglip))}


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def demo_classes(demo):
    return zsclip.ZeroShotClassifier.build(demo, shapes.classnames())


def _towers(tiny_clip, hf_models, demo):
    return {"open_clip ViT": tiny_clip, "open_clip ResNet (demo)": demo, "transformers CLIP": hf_models["clip"],
            "transformers SigLIP": hf_models["siglip"]}


def test_dense_towers_pool_to_the_models_own_embedding(tiny_clip, hf_models, demo):
    """The grid Grad-CAM differentiates is the one the embedding is computed from: at the model's own size the
    tower's pooled embedding equals encode_images for every kind of tower."""
    image = shapes.render(shapes.sample_specs(1, seed=3)[0], 48)
    for name, encoder in _towers(tiny_clip, hf_models, demo).items():
        pixels = encoder.preprocess(image)[None]
        with torch.no_grad():
            grid, pooled = dense_tower(encoder).activations(pixels)
        assert grid.ndim == 4 and grid.shape[-1] == dense_tower(encoder).grid, name
        assert torch.allclose(F.normalize(pooled.float(), dim=-1), encoder.encode_images(pixels), atol=1e-4), name


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_tower_gives_an_image_sized_map_per_target(tiny_clip, hf_models, demo, method):
    image = Image.new("RGB", (50, 38), (200, 30, 30))  # not square: the map is still the image's size
    for name, encoder in _towers(tiny_clip, hf_models, demo).items():
        targets = F.normalize(torch.randn(2, encoder.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
        (maps,) = image_heatmaps(encoder, [image], [targets], method=method)
        assert len(maps) == 2, name
        assert all(m.shape == (38, 50) and m.dtype == np.float32 and np.isfinite(m).all() for m in maps), name
        again = image_heatmaps(encoder, [image], [targets], method=method)[0]
        assert all(np.array_equal(a, b) for a, b in zip(maps, again, strict=True)), f"{name}: not deterministic"
        assert not any(p.grad is not None for p in encoder.model.parameters()), f"{name}: gradients left behind"
        assert not encoder.model.training


def test_a_batch_gives_each_image_its_own_maps(tiny_clip):
    """Batched images with different numbers of targets get exactly what each alone would get."""
    images = [shapes.render(spec, 40) for spec in shapes.sample_specs(2, seed=5)]
    targets = [F.normalize(torch.randn(k, tiny_clip.embed_dim), dim=-1) for k in (1, 3)]
    for method in METHODS:
        together = image_heatmaps(tiny_clip, images, targets, method=method)
        alone = [image_heatmaps(tiny_clip, [img], [t], method=method)[0] for img, t in zip(images, targets, strict=True)]
        assert [len(m) for m in together] == [1, 3]
        for a, b in zip(together, alone, strict=True):
            assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def _box(spec, size):
    return ((spec.centre[0] - spec.radius) * size, (spec.centre[1] - spec.radius) * size,
            (spec.centre[0] + spec.radius) * size, (spec.centre[1] + spec.radius) * size)


def _points_inside(heat, box) -> bool:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return box[0] <= x + 0.5 <= box[2] and box[1] <= y + 0.5 <= box[3]


@pytest.mark.parametrize("method", METHODS)
def test_pointing_game_on_demo_scenes(demo, demo_classes, method):
    """On scenes of two or three shapes the heatmap of the asked class peaks inside that shape's box (the full
    measurement: benchmarks/explain_pointing.py; here a handful of scenes and a bar both methods clear)."""
    rng = random.Random(11)
    scenes = [shapes.sample_scene(rng) for _ in range(8)]
    asked = [rng.choice(scene.shapes) for scene in scenes]
    images = [shapes.render_scene(scene, 96) for scene in scenes]
    names = demo_classes.classnames
    targets = [demo_classes.weights[:, [names.index(spec.label)]].T for spec in asked]
    maps = image_heatmaps(demo, images, targets, method=method)
    hits = sum(_points_inside(m[0], _box(spec, 96)) for m, spec in zip(maps, asked, strict=True))
    assert hits >= 7, f"{method}: {hits} of 8"
