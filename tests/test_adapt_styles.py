"""Styles of the shapes world (distribution shifts for `zsclip adapt`): "plain" is today's output, bit for bit."""

from __future__ import annotations

import filecmp
import hashlib

import numpy as np
import pytest

from zsclip import shapes

#: SHA-256 over render(spec, 64) and render(spec, 40, supersample=1) of sample_specs(24, 5, "all"),
#: taken from shapes.py before styles existed (commit 5c31d43): the demo model was trained on it.
PLAIN_DIGEST = "c7c793b3f7e171d00e13a2afc343eb0c68f0163d3adfd24b8379679f666b9c19"


def _digest(**style) -> str:
    digest = hashlib.sha256()
    for spec in shapes.sample_specs(24, seed=5, split="all"):
        digest.update(shapes.render(spec, 64, **style).tobytes())
        digest.update(shapes.render(spec, 40, supersample=1, **style).tobytes())
    return digest.hexdigest()


def test_plain_style_is_bit_identical_to_the_renderer_before_styles():
    assert _digest() == PLAIN_DIGEST
    assert _digest(style="plain") == PLAIN_DIGEST


def test_write_dataset_plain_style_writes_the_same_files(tmp_path):
    default = shapes.write_dataset(tmp_path / "a", 2, seed=4, split="held-out")
    plain = shapes.write_dataset(tmp_path / "b", 2, seed=4, split="held-out", style="plain")
    names = sorted(p.name for p in (default.parent / "images").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(default.parent / "images", plain.parent / "images", names, shallow=False)
    assert len(match) == len(names) == 16 and not mismatch and not errors
    assert default.read_text() == plain.read_text()


@pytest.mark.parametrize("style", ["outline", "texture", "noise", "tiny", "outline+tiny", "texture+noise"])
def test_each_style_changes_the_image_deterministically(style):
    spec = shapes.ShapeSpec("red", "square", "blue", radius=0.35, centre=(0.5, 0.5), rotation=10)
    plain = np.asarray(shapes.render(spec, 64)).astype(int)
    styled = np.asarray(shapes.render(spec, 64, style=style)).astype(int)
    assert styled.shape == plain.shape and np.abs(styled - plain).mean() > 2
    assert np.array_equal(styled, np.asarray(shapes.render(spec, 64, style=style)))  # seeded by the spec


def test_outline_keeps_the_background_inside_and_tiny_shrinks_the_shape():
    spec = shapes.ShapeSpec("red", "circle", "blue", radius=0.4, centre=(0.5, 0.5), rotation=0)
    red = np.array(shapes.COLOURS["red"])
    centre = np.asarray(shapes.render(spec, 64, style="outline"))[32, 32]
    assert np.abs(centre - np.array(shapes.COLOURS["blue"])).sum() < 10  # hollow
    area = {style: (np.abs(np.asarray(shapes.render(spec, 64, style=style)).astype(int) - red).sum(-1) < 40).mean()
            for style in ("plain", "outline", "tiny")}
    assert area["outline"] < 0.5 * area["plain"]
    assert area["tiny"] == pytest.approx(area["plain"] * shapes.TINY_SCALE ** 2, rel=0.15)


def test_unknown_style_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown style 'sketch'"):
        shapes.write_dataset(tmp_path / "x", 1, seed=0, style="sketch")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="outline\\+noise"):
        shapes.render(shapes.sample_specs(1, 0)[0], style="outline+bogus")
