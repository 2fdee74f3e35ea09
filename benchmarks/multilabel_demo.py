"""Multi-label scoring and retrieval on the demo model, in scenes of 2-3 shapes (zsclip.shapes).

Measures, on one test set and one calibration set of scenes (disjoint seeds):
- mAP of each multi-label score (negative prompt, standardised cosine, raw cosine) vs ranking by the
  softmax over all 48 labels;
- micro / macro F1 with fixed thresholds vs thresholds calibrated on the calibration scenes (best F1);
- the scores that need no labels (the ``--multi-label`` default's candidates): the negative prompt, the softmax,
  each label's cosine standardised over the images being classified (``collection``: its fixed z threshold
  chosen here on the calibration scenes, then used on the test scenes) in runs of n images, and each image's
  cosines standardised across the labels (``image``, a candidate for runs too small for statistics);
- retrieval recall@1/5/10 both ways on captions such as "a red star and a blue ring".

    PYTHONPATH=src python benchmarks/multilabel_demo.py --scenes 300 --calibration 150
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

import zsclip
from zsclip.heads.multilabel import MultiLabelClassifier
from zsclip.job import open_source
from zsclip.job.plan import features
from zsclip.shapes import write_scenes
from zsclip.tasks.multilabel_metrics import MultiLabelMetrics, threshold_metrics


def labelled_features(manifest: Path, names: list[str], encoder, options):
    source = open_source(str(manifest), labelled=True, classes=[[n] for n in names])
    feats, sets = [], []
    for batch in features(source, encoder, options):
        feats.append(batch.features)
        sets += batch.good_label_sets()
    return torch.cat(feats), sets


def truth_of(sets, width):
    truth = torch.zeros(len(sets), width, dtype=torch.bool)
    for row, labels in enumerate(sets):
        truth[row, list(labels)] = True
    return truth


def collection_z(cosine: torch.Tensor, run: int) -> torch.Tensor:
    """Each label's cosine as a z-score over the images of its run (consecutive runs of ``run`` images), as
    ``--multi-label`` scores a run of that many images; a run's last part shorter than ``run`` joins the one before."""
    out = torch.empty_like(cosine)
    starts = list(range(0, len(cosine), run))
    if len(starts) > 1 and len(cosine) - starts[-1] < run:
        starts.pop()
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(cosine)
        part = cosine[start:end]
        out[start:end] = (part - part.mean(dim=0)) / part.std(dim=0).clamp_min(1e-6)
    return out


def image_z(cosine: torch.Tensor) -> torch.Tensor:
    """Each image's cosines as z-scores across the labels."""
    return (cosine - cosine.mean(dim=1, keepdim=True)) / cosine.std(dim=1, keepdim=True).clamp_min(1e-6)


def best_fixed_threshold(scores: torch.Tensor, truth: torch.Tensor, names, grid) -> float:
    """The one threshold (shared by all labels) of the best micro F1 on these (calibration) scores."""
    return max(grid, key=lambda t: threshold_metrics(scores >= t, truth, names)["micro_f1"])


def label_free(positive, cal_x, cal_sets, test_x, test_sets, names) -> None:
    """The scores ``--multi-label`` can use without labelled images, thresholds fixed once (on calibration scenes)."""
    cal_truth, truth = truth_of(cal_sets, len(names)), truth_of(test_sets, len(names))
    cal_cos, cos = cal_x @ positive.weights, test_x @ positive.weights
    grid = [round(0.25 * i, 2) for i in range(0, 17)]
    z_threshold = best_fixed_threshold(collection_z(cal_cos, len(cal_cos)), cal_truth, names, grid)
    image_threshold = best_fixed_threshold(image_z(cal_cos), cal_truth, names, grid)
    print(f"\nscores that need no labels (fixed thresholds chosen on the calibration scenes: collection z >= "
          f"{z_threshold:g}, image z >= {image_threshold:g}); mAP per label over the test scenes, F1 at the threshold:")
    print("| score | images per run | mAP | micro / macro F1 |")
    print("|---|---:|---:|---|")

    def row(name, run, scores, threshold):
        metrics = MultiLabelMetrics(names)
        metrics.update(scores, test_sets)
        f1 = threshold_metrics(scores >= threshold, truth, names)
        print(f"| {name} | {run} | {metrics.result()['mAP']:.3f} | {f1['micro_f1']:.3f} / {f1['macro_f1']:.3f} |")

    for run in (4, 8, 16, 32, 64, len(cos)):
        row(f"collection (z >= {z_threshold:g})", run, collection_z(cos, run), z_threshold)
    row(f"image (z >= {image_threshold:g})", "any", image_z(cos), image_threshold)
    row("softmax (>= 0.5)", "any", (positive.logit_scale * cos).softmax(dim=-1), 0.5)
    negative = MultiLabelClassifier.from_classifier(positive, ENCODER[0], score="negative", precision="fp32",
                                                    cache=False)
    row("negative (>= 0.5)", "any", negative.scores(test_x), 0.5)


ENCODER: list = []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--calibration", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    encoder = zsclip.load_model("demo")
    ENCODER.append(encoder)
    options = zsclip.RunOptions(precision="fp32", workers=0, batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        test = write_scenes(Path(tmp) / "test", args.scenes, args.seed)
        calibration = write_scenes(Path(tmp) / "calibration", args.calibration, args.seed + 1)
        names = (Path(tmp) / "test" / "labels.txt").read_text().split("\n")[:-1]
        test_x, test_sets = labelled_features(test, names, encoder, options)
        cal_x, cal_sets = labelled_features(calibration, names, encoder, options)
        truth = truth_of(test_sets, len(names))
        print(f"demo model, {len(test_x)} test scenes / {len(cal_x)} calibration scenes of 2-3 shapes, "
              f"{len(names)} labels, {truth.sum(1).float().mean():.2f} labels per scene")
        positive = zsclip.ZeroShotClassifier.build(encoder, names, None, precision="fp32", cache=False)
        rows = []
        for score in ("negative", "standardised", "softmax"):
            fixed = MultiLabelClassifier.from_classifier(positive, encoder, score=score, precision="fp32", cache=False)
            if score == "standardised":  # statistics from the (unlabelled) calibration images, fixed z threshold
                fixed.calibrate([(cal_x, cal_sets)], thresholds=False)
            scores = fixed.scores(test_x)
            metrics = MultiLabelMetrics(names)
            metrics.update(scores, test_sets)
            mean_ap = metrics.result()["mAP"]
            fixed_f1 = threshold_metrics(scores >= fixed.thresholds, truth, names)
            calibrated = MultiLabelClassifier.from_classifier(positive, encoder, score=score, precision="fp32",
                                                              cache=False)
            calibrated.calibrate([(cal_x, cal_sets)])
            cal_f1 = threshold_metrics(calibrated.scores(test_x) >= calibrated.thresholds, truth, names)
            rows.append((score, mean_ap, float(fixed.thresholds[0]), fixed_f1, cal_f1))
        cosine = MultiLabelMetrics(names)
        cosine.update(test_x @ positive.weights, test_sets)
        chance = float(truth.float().mean())
        print("\n| score | mAP | micro / macro F1, fixed threshold | micro / macro F1, calibrated (best F1) |")
        print("|---|---|---|---|")
        for score, mean_ap, threshold, fixed_f1, cal_f1 in rows:
            print(f"| {score} | {mean_ap:.3f} | {fixed_f1['micro_f1']:.3f} / {fixed_f1['macro_f1']:.3f} "
                  f"(at {threshold:g}) | {cal_f1['micro_f1']:.3f} / {cal_f1['macro_f1']:.3f} |")
        print(f"| raw cosine (ranks as standardised) | {cosine.result()['mAP']:.3f} | | |")
        print(f"\nchance mAP ~ label frequency {chance:.3f}")
        label_free(positive, cal_x, cal_sets, test_x, test_sets, names)
        record = zsclip.evaluate_retrieval(Path(tmp) / "test" / "captions.csv", encoder=encoder, options=options)
        m = record["metrics"]
        print(f"\nretrieval on {record['num_images']} scenes, {record['num_captions']} captions:")
        print("| k | image_retrieval_recall@k | text_retrieval_recall@k | chance (k / images) |")
        print("|---|---|---|---|")
        for k in (1, 5, 10):
            print(f"| {k} | {m[f'image_retrieval_recall@{k}']:.3f} | {m[f'text_retrieval_recall@{k}']:.3f} | "
                  f"{k / record['num_images']:.3f} |")


if __name__ == "__main__":
    main()
