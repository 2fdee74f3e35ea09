"""Heatmaps (zsclip.heatmaps, issue 35): every tower kind and method, the demo world's pointing game, and the
entry points (zsclip explain, classify --explain, zsclip.explain) read back as a user would."""

from __future__ import annotations

import json
import random
from pathlib import Path

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
    return zsclip.ZeroShotClassifier.build(demo, shapes.classnames(), "photo")


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
        alone = [image_heatmaps(tiny_clip, [image], [target], method=method)[0]
                 for image, target in zip(images, targets, strict=True)]
        assert [len(m) for m in together] == [1, 3]
        for a, b in zip(together, alone, strict=True):
            assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def _box(spec, size):
    return ((spec.centre[0] - spec.radius) * size, (spec.centre[1] - spec.radius) * size,
            (spec.centre[0] + spec.radius) * size, (spec.centre[1] + spec.radius) * size)


def _points_inside(heat, box) -> bool:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return box[0] <= x + 0.5 <= box[2] and box[1] <= y + 0.5 <= box[3]


@pytest.mark.slow
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


# --- entry points -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    """Two demo scenes (one not square) and their truth."""
    root = tmp_path_factory.mktemp("scenes")
    rng = random.Random(21)
    truth = {}
    for index, size in enumerate(((96, 96), (120, 96))):
        scene = shapes.sample_scene(rng, 2)
        image = shapes.render_scene(scene, 96)
        if size != (96, 96):
            canvas = Image.new("RGB", size, image.getpixel((0, 0)))
            canvas.paste(image, (12, 0))
            image = canvas
        path = root / f"scene{index}.png"
        image.save(path)
        truth[path.name] = scene
    (root / "labels.txt").write_text("\n".join(shapes.classnames()) + "\n")
    return root, truth


def _run(*args):
    from click.testing import CliRunner

    from zsclip.cli import main

    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def _index(directory):
    return [json.loads(line) for line in (directory / "explained.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_explain_command_writes_an_overlay_and_values_per_top_label(scene_dir, tmp_path):
    root, truth = scene_dir
    out = tmp_path / "explained"
    result = _run("explain", root / "scene0.png", root / "scene1.png", "--labels-file", root / "labels.txt",
                  "--model", "demo", "--templates", "photo", "-k", "2", "-o", out)
    assert result.exit_code == 0, result.output
    rows = _index(out)
    assert [row["source"] for row in rows] == [str(root / "scene0.png")] * 2 + [str(root / "scene1.png")] * 2
    for row in rows:
        with Image.open(root / Path(row["source"]).name) as original, Image.open(out / row["png"]) as overlay:
            assert overlay.size == original.size and overlay.mode == "RGB"
        values = np.load(out / row["npy"])
        assert values.shape == (original.size[1], original.size[0]) and values.dtype == np.float32
        assert row["method"] == "patch"
    # the top label is the classify answer for the same image
    for name in ("scene0.png", "scene1.png"):
        first = next(row for row in rows if row["source"].endswith(name))
        (answer,) = zsclip.classify([root / name], shapes.classnames(), model="demo", templates="photo", top_k=1)
        assert first["label"] == answer.labels[0]
        assert first["label"] in truth[name].labels  # the demo model names a shape that is there


@pytest.mark.slow
def test_explain_text_and_gradcam_and_python_api(scene_dir, tmp_path):
    root, truth = scene_dir
    scene = truth["scene0.png"]
    asked = scene.shapes[1].label
    results = list(zsclip.explain(root / "scene0.png", shapes.classnames(), model="demo", templates="photo",
                                  texts=[asked], method="gradcam", output_dir=tmp_path / "py"))
    (only,) = results
    assert only.labels == [asked] and only.heatmaps[0].shape == (96, 96)
    assert _points_inside(only.heatmaps[0], _box(scene.shapes[1], 96))
    assert np.array_equal(np.load(tmp_path / "py" / only.files[0]["npy"]), only.heatmaps[0])


@pytest.mark.slow
def test_classify_explain_writes_rows_and_heatmaps(scene_dir, tmp_path):
    root, _ = scene_dir
    rows_file, out = tmp_path / "rows.csv", tmp_path / "heat"
    result = _run("classify", root, "--labels-file", root / "labels.txt", "--model", "demo", "-k", "2",
                  "--templates", "photo", "--explain", out, "-o", rows_file, "--method", "gradcam")
    assert result.exit_code == 0, result.output
    import csv

    with open(rows_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    index = _index(out)
    assert len(index) == 4 and {row["method"] for row in index} == {"gradcam"}
    for row in rows:  # the heatmaps are of the labels the rows answer
        explained = [entry["label"] for entry in index if entry["source"] == row["path"]]
        assert explained == [row["label"], row["label_2"]]


@pytest.mark.slow
def test_multi_label_and_tree_explain_their_own_labels(scene_dir, tmp_path):
    root, truth = scene_dir
    (multi,) = zsclip.explain(root / "scene0.png", shapes.classnames(), model="demo", templates="photo",
                              multi_label=True, multi_score="softmax", threshold=0.05)
    assert multi.labels == multi.prediction.labels and multi.labels
    tree = tmp_path / "tree.yaml"
    tree.write_text("shape with a colour:\n" + "".join(
        f"  {shape}:\n" + "".join(f"    - {colour} {shape}\n" for colour in shapes.COLOURS)
        for shape in shapes.SHAPES))
    (path,) = zsclip.explain(root / "scene0.png", model="demo", templates="photo", labels_tree=tree,
                             tree_mode="top-down")
    record = path.prediction.record
    levels = [key for key in record if not key.endswith("_probability")]
    assert path.labels == [record[level] for level in levels] and len(path.heatmaps) == len(levels)


def test_explain_refusals_are_one_line(tmp_path, tiny_clip_dir, scene_dir):
    root, _ = scene_dir
    store = tmp_path / "images.zse"
    assert _run("embed", root / "scene0.png", "-o", store, "--model", tiny_clip_dir).exit_code == 0
    result = _run("explain", store, "--labels", "a,b", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "holds embeddings, not pixels" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = _run("classify", store, "--labels", "a,b", "--explain", tmp_path / "x")
    assert result.exit_code == 2 and "explain the image files" in result.output
    result = _run("classify", root, "--labels", "a,b", "--method", "gradcam")
    assert result.exit_code == 2 and "add --explain DIR" in result.output
    result = _run("explain", root / "scene0.png", root / "missing.png", "--labels", "a,b", "--model", tiny_clip_dir,
                  "-o", tmp_path / "y")
    assert result.exit_code == 1 and "missing.png" in result.output
    assert [row["source"] for row in _index(tmp_path / "y")] == [str(root / "scene0.png")]


@pytest.mark.slow
def test_a_classifier_file_explains_through_its_own_columns(scene_dir, tmp_path):
    """An adapted head's column is what is explained: a file whose two columns are swapped explains "a" with
    what was "b"'s column."""
    root, _ = scene_dir
    names = ["red star", "blue ring", "green square", "yellow circle"]
    built = zsclip.ZeroShotClassifier.build(zsclip.load_model("demo"), names, "photo")
    swapped = built.weights.clone()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    path = zsclip.ZeroShotClassifier(swapped, names, [[n] for n in names], built.logit_scale,
                                     provenance=dict(built.provenance)).save(tmp_path / "adapted.zsc")
    image = root / "scene0.png"
    (own,) = zsclip.explain(image, classifier=path, texts=["red star"])
    (reference,) = zsclip.explain(image, names, model="demo", templates="photo", texts=["blue ring"])
    assert np.allclose(own.heatmaps[0], reference.heatmaps[0], atol=1e-6)


def test_a_rejected_image_explains_nothing(scene_dir, tiny_clip_dir):
    """Every head option means what it means in classify: with a threshold no image passes, the answer is the
    reject label and no heatmap is made."""
    root, _ = scene_dir
    with pytest.warns(zsclip.ZsclipWarning, match="rejects every image"):
        (rejected,) = zsclip.explain(root / "scene0.png", ["a", "b"], model=tiny_clip_dir, reject=1e9,
                                     reject_label="unknown")
    assert rejected.prediction.labels == ["unknown"] and rejected.labels == [] and rejected.heatmaps == []
