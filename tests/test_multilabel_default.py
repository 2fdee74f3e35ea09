"""``--multi-label`` alone scores each label by its cosine standardised over the images being classified (issue
32 item 11: the negative prompt it used to default to measured mAP 0.073 against 0.32 on multi-object scenes,
benchmarks/multilabel_demo.py). Runs of fewer than ``MIN_COLLECTION`` images fall back to the softmax, said in a
warning. The statistics cover the whole run, so a run's answers do not depend on how it is batched."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

import zsclip
from zsclip.cli import main
from zsclip.heads.multilabel import COLLECTION_FALLBACK, DEFAULT_THRESHOLDS, MIN_COLLECTION
from zsclip.shapes import write_scenes

COMMON = ["-m", "demo", "-j", "0", "--precision", "fp32"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    manifest = write_scenes(tmp_path_factory.mktemp("default") / "scenes", MIN_COLLECTION + 4, seed=21)
    names = (manifest.parent / "labels.txt").read_text().split("\n")[:-1]
    return manifest, names


def _rows(path) -> dict[str, list[str]]:
    with open(path, newline="") as handle:
        return {row["path"]: [n for n in row["labels"].split(";") if n] for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_multi_label_alone_standardises_each_label_over_the_images_classified(scenes, tmp_path):
    manifest, names = scenes
    images = manifest.parent / "images"
    result = CliRunner().invoke(main, ["classify", str(images), "--labels-file", str(manifest.parent / "labels.txt"),
                                       "--multi-label", "-b", "8", "-o", str(tmp_path / "rows.csv"), *COMMON])
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "rows.csv")
    # the reference: every image's features, each label's z-score over all of them (batches of 8 do not matter)
    encoder = zsclip.load_model("demo")
    paths = sorted(rows)
    from zsclip.job import ImageFiles
    from zsclip.job.plan import features as feature_batches

    options = zsclip.RunOptions(precision="fp32", workers=0)
    features = torch.cat([batch.features for batch in feature_batches(
        ImageFiles([zsclip.Source(path) for path in paths]), encoder, options)])
    weights = zsclip.ZeroShotClassifier.build(encoder, names, None, precision="fp32").weights
    cosine = features @ weights
    z = (cosine - cosine.mean(dim=0)) / cosine.std(dim=0)
    threshold = DEFAULT_THRESHOLDS["collection"]
    for path, values in zip(paths, z, strict=True):
        clear = (values - threshold).abs() > 1e-3
        expected = {names[i] for i in range(len(names)) if values[i] >= threshold and clear[i]}
        assert {label for label in rows[path] if clear[names.index(label)]} == expected
    assert sum(len(labels) for labels in rows.values()) > 0
    # eval: the record names the score, and its mAP is the cosine ranking's (a z-score per label ranks alike)
    evaluated = CliRunner().invoke(main, ["eval", "--data", str(manifest), "--labels-file",
                                          str(manifest.parent / "labels.txt"), "--multi-label", "-o",
                                          str(tmp_path / "m.json"), *COMMON])
    assert evaluated.exit_code == 0, evaluated.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["score"] == "collection"
    comparison = record["score_comparison"]
    assert comparison["collection"] == pytest.approx(comparison["cosine (= standardised ranking)"], abs=1e-9)


def test_a_run_too_small_for_statistics_falls_back_and_says_so(scenes, tmp_path):
    manifest, names = scenes
    images = sorted((manifest.parent / "images").glob("*.png"))[:3]
    result = CliRunner().invoke(main, ["classify", *map(str, images), "--labels", "red star,blue ring,green circle",
                                       "--multi-label", "-o", str(tmp_path / "few.csv"), *COMMON])
    assert result.exit_code == 0, result.output
    assert f"scored by {COLLECTION_FALLBACK}" in result.stderr and f"at least {MIN_COLLECTION}" in result.stderr
    encoder = zsclip.load_model("demo")
    softmax = zsclip.ZeroShotClassifier.build(encoder, ["red star", "blue ring", "green circle"], None,
                                              precision="fp32").predict([str(p) for p in images], top_k=3)
    rows = _rows(tmp_path / "few.csv")
    for path, ranked in zip(images, softmax, strict=True):
        assert rows[str(path)] == [label for label, score in ranked if score >= DEFAULT_THRESHOLDS["softmax"]]
