"""The bundled demo model: loads offline through the public API and classifies its world correctly."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zsclip
from zsclip import RunOptions, ZeroShotClassifier, evaluate, shapes
from zsclip.data.collections import manifest
from zsclip.encoders.openclip import demo_model_dir
from zsclip.errors import ModelLoadError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def demo():
    return zsclip.load_model("demo", device="cpu")


def test_demo_ships_as_a_small_local_dir_model_with_the_clip_tokenizer(demo):
    folder = demo_model_dir()
    files = {p.name for p in folder.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors"} <= files
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 1024 * 1024
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert "hf_tokenizer_name" not in config["model_cfg"]["text_cfg"]  # open_clip's own CLIP BPE tokenizer
    assert config["zsclip_demo"]["held_out"] == [f"{c} {s}" for c, s in shapes.HELD_OUT]
    assert demo.name == "demo"
    # the same weights as loading the folder as any local-dir model
    assert demo.fingerprint == zsclip.load_model(f"local-dir:{folder}", device="cpu").fingerprint


def test_demo_takes_no_pretrained_tag():
    with pytest.raises(ModelLoadError, match="demo model ships with its weights"):
        zsclip.load_model("demo", "laion2b_s34b_b79k", device="cpu")


@pytest.mark.slow
def test_examples_are_classified_correctly_from_the_command_line(tmp_path):
    images = sorted(EXAMPLES.glob("*.png"))
    assert len(images) >= 6
    out = tmp_path / "examples.csv"
    run = subprocess.run([sys.executable, "-m", "zsclip", "classify", str(EXAMPLES), "--model", "demo",
                          "--labels-file", str(EXAMPLES / "labels.txt"), "--output", str(out), "--workers", "0"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    rows = {Path(r["path"]).stem: r["label"] for r in csv.DictReader(out.open())}
    assert len(rows) == len(images)
    # file names say the truth: red_star.png, ... (a trailing _N tells copies apart)
    expected = {stem: " ".join(stem.split("_")[:2]) for stem in rows}
    assert rows == expected


@pytest.mark.parametrize(("split", "label", "threshold"), [
    ("seen", "both", 0.9), ("held-out", "both", 0.9), ("held-out", "shape", 0.9), ("held-out", "colour", 0.9),
])
@pytest.mark.slow
def test_zero_shot_accuracy_on_fresh_images_is_far_above_chance(demo, tmp_path, split, label, threshold):
    """Chance is 1/48, 1/6 and 1/8. Measured: 100% on 2,000 seen and 400 held-out images for each
    labelling (benchmarks/demo_accuracy.py), so 90% on these 48-240 images leaves a wide margin."""
    path = shapes.write_dataset(tmp_path, per_class=6, seed=20261123, split=split, label=label)
    classes = shapes.classnames(label)
    result = evaluate(manifest(path, classes), demo, ["openai-imagenet"], options=RunOptions(workers=0), cache=False)
    assert result.failures == [] and result.num_images == 6 * len(shapes.combinations(split))
    assert result.metrics["openai-imagenet"]["acc1"] >= threshold


def test_a_held_out_pair_is_named_by_its_own_label(demo):
    specs = shapes.sample_specs(8, seed=99, split="held-out")
    clf = ZeroShotClassifier.build(demo, shapes.classnames("both"), cache=False)
    predictions = clf.predict([shapes.render(spec, 96) for spec in specs], top_k=1)
    correct = sum(p[0][0] == spec.label for p, spec in zip(predictions, specs, strict=True))
    assert correct >= 7


def test_draft_decoding_of_large_jpegs_keeps_a_trained_models_answers(demo, tmp_path):
    """JPEG draft mode (decode at 1/2..1/8 scale) against full decoding, with real predictions."""
    from zsclip import RunOptions
    from zsclip.data.sources import expand_inputs
    from zsclip.tasks.classify import classify_items

    specs = shapes.sample_specs(48, seed=31, split="all")
    for index, spec in enumerate(specs):
        shapes.render(spec, 1024, supersample=1).save(tmp_path / f"{index:02d}.jpg", quality=90)
    clf = ZeroShotClassifier.build(demo, shapes.classnames("both"), "photo", cache=False)
    sources = list(expand_inputs([str(tmp_path)]))
    runs = {draft: [p.labels[0] for p in classify_items(sources, clf, demo, top_k=1,
                                                        options=RunOptions(workers=0, draft=draft))]
            for draft in (True, False)}
    truth = [spec.label for spec in specs]
    assert sum(a == b for a, b in zip(runs[True], runs[False], strict=True)) >= 46  # >= 95% agree
    assert sum(a == b for a, b in zip(runs[True], truth, strict=True)) >= 43  # and stay right (90%)
