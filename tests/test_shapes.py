"""The synthetic shapes world: what it draws, how it labels, and the data sets it writes."""

from __future__ import annotations

import csv
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from zsclip import shapes


def test_world_has_the_promised_colours_shapes_and_held_out_pairs():
    assert set(shapes.COLOURS) == {"red", "green", "blue", "yellow", "purple", "orange", "white", "black"}
    assert set(shapes.SHAPES) == {"circle", "square", "triangle", "star", "cross", "ring"}
    held_out = set(shapes.HELD_OUT)
    assert len(held_out) == len(shapes.HELD_OUT) == 8
    assert Counter(c for c, _ in held_out) == Counter(list(shapes.COLOURS))  # each colour held out once
    assert held_out.isdisjoint(shapes.combinations("seen"))
    assert set(shapes.combinations("all")) == held_out | set(shapes.combinations("seen"))
    # every colour and every shape is still seen in training with some other partner
    seen = shapes.combinations("seen")
    assert {c for c, _ in seen} == set(shapes.COLOURS) and {s for _, s in seen} == set(shapes.SHAPES)
    assert len(shapes.classnames("both")) == 48 and "red star" in shapes.classnames("both")
    assert shapes.classnames("colour") == list(shapes.COLOURS) and shapes.classnames("shape") == list(shapes.SHAPES)


def test_random_scenes_come_from_their_split_and_differ_from_their_background():
    specs = shapes.sample_specs(500, seed=3, split="seen")
    assert all((s.colour, s.shape) not in shapes.HELD_OUT for s in specs)
    assert all(s.background != s.colour for s in specs)
    assert len({s.radius for s in specs}) > 400 and len({s.centre for s in specs}) > 400  # random size, place
    assert {s.background for s in specs} == set(shapes.COLOURS)
    assert all(abs(t) <= shapes.COLOUR_JITTER for s in specs for t in (*s.tint, *s.background_tint))
    assert shapes.sample_specs(20, seed=3) == shapes.sample_specs(20, seed=3)
    assert shapes.sample_specs(20, seed=3) != shapes.sample_specs(20, seed=4)
    held = shapes.sample_specs(100, seed=3, split="held-out")
    assert {(s.colour, s.shape) for s in held} == set(shapes.HELD_OUT)


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_render_draws_the_shape_in_its_colour_on_its_background(shape):
    spec = shapes.ShapeSpec("red", shape, "blue", radius=0.35, centre=(0.5, 0.5), rotation=10)
    image = shapes.render(spec, 96)
    assert image.size == (96, 96) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    red = (np.abs(pixels - shapes.COLOURS["red"]).sum(1) < 30).mean()
    blue = (np.abs(pixels - shapes.COLOURS["blue"]).sum(1) < 30).mean()
    assert 0.05 < red < 0.5 and blue > 0.4  # a shape, not a flood fill
    assert np.asarray(image)[0, 0].tolist() == list(shapes.COLOURS["blue"])  # corner is background


def test_random_shapes_stay_inside_the_image():
    for spec in shapes.sample_specs(60, seed=8, split="all"):
        # 1% smaller: a shape tangent to the edge may colour its last pixel row; one that reaches
        # past its bounding circle (radius) colours many
        spec = shapes.ShapeSpec(spec.colour, spec.shape, spec.background, spec.radius * 0.99, spec.centre,
                                spec.rotation)
        pixels = np.asarray(shapes.render(spec, 256, supersample=1)).astype(int)  # exact geometry, no blur
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert (border == shapes.COLOURS[spec.background]).all(), spec


def test_unnamed_colours_are_far_from_the_palette_and_names_are_checked():
    rng = random.Random(1)
    for _ in range(200):
        rgb = shapes._rgb(shapes.unnamed_colour(rng), (0, 0, 0))
        assert min(np.linalg.norm(np.subtract(rgb, named)) for named in shapes.COLOURS.values()) >= 110
    spec = shapes.ShapeSpec("#40e0d0", "ring", "black", 0.3, (0.5, 0.5), 0)
    assert np.asarray(shapes.render(spec, 64))[32, 16].tolist() == [64, 224, 208]  # on the ring
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        shapes.render(shapes.ShapeSpec("pink", "ring", "black", 0.3, (0.5, 0.5), 0))


def test_shapes_are_told_apart_by_their_masks():
    masks = {}
    for shape in shapes.SHAPES:
        spec = shapes.ShapeSpec("black", shape, "white", radius=0.4, centre=(0.5, 0.5), rotation=0)
        masks[shape] = np.asarray(shapes.render(spec, 64).convert("L")) < 128
    assert not masks["ring"][32, 32] and masks["circle"][32, 32]  # the ring has a hole
    for a in shapes.SHAPES:
        for b in shapes.SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).mean() > 0.03, (a, b)


def test_write_dataset_labels_each_kind_against_the_full_label_set(tmp_path):
    path = shapes.write_dataset(tmp_path / "held", per_class=2, seed=5, split="held-out", label="shape")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2 * len(shapes.HELD_OUT)
    assert (tmp_path / "held" / "labels.txt").read_text().split("\n")[:-1] == list(shapes.SHAPES)
    for row in rows:
        image = Image.open(path.parent / row["path"])
        assert image.size == (64, 64)
        colour, shape = (path.parent / row["path"]).stem.split("_")[:2]
        assert (colour, shape) in shapes.HELD_OUT and row["label"] == shape
    both = shapes.write_dataset(tmp_path / "both", per_class=1, seed=5, split="all", label="both")
    assert len((tmp_path / "both" / "labels.txt").read_text().split()) == 96  # 48 two-word names
    assert sorted(r["label"] for r in csv.DictReader(both.open())) == sorted(shapes.classnames("both"))


def test_sample_spec_takes_a_given_rng_and_pair():
    spec = shapes.sample_spec(random.Random(0), [("white", "ring")])
    assert (spec.colour, spec.shape, spec.label) == ("white", "ring", "white ring")
