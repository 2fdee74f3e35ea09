"""Multi-label evaluation: every image's label set against the head's per-label scores and thresholds.

One job: a multi-label source (a manifest with a ``labels`` column or JSONL list, or a store embedded
from one) and a multi-label head (``zsclip.heads.multilabel``), on a runner (this process or Ray).
The record holds mAP and per-label AP (as scikit-learn's ``average_precision_score``), micro/macro
F1, precision and recall at the thresholds, and the mAP of ranking each label by the softmax over
all labels and by its raw cosine on the same features, for comparison.
"""

from __future__ import annotations

import os
import time

import torch

from ..errors import InputError
from ..job import HeadOptions, open_source, plan
from ..job.sources import require_labels
from ..options import RunOptions
from .multilabel_metrics import MultiLabelMetrics


def evaluate_multilabel(data, labels=None, *, classifier=None, templates=None, descriptions=None,
                        score: str | None = None, threshold: float | None = None, calibrate=None,
                        target_precision: float | None = None, dataset: str | None = None, encoder=None,
                        model: str | None = None, pretrained: str | None = None, options: RunOptions | None = None,
                        cache: bool = True, cache_dir: str | os.PathLike | None = None, ray=None) -> dict:
    """Evaluate a multi-label head on ``data`` (a multi-label manifest or a labelled store); returns the
    eval record (``metrics``: mAP, micro/macro F1, precision, recall; ``per_label_ap``; ``per_label``;
    ``score_comparison``: mAP by each way of scoring on the same features). ``labels``: names in the
    manifest's label order (a labels file), else the manifest's own names."""
    given = None if labels is None else [[name] if isinstance(name, str) else list(name) for name in labels]
    source = open_source(data, labelled=True, classes=given, dataset=dataset, model=model)
    require_labels(source, "multi-label eval", multi_label=True)
    data_names = list(source.classnames)
    build_from = (given if given is not None else data_names) if classifier is None else None
    job = plan(source, HeadOptions(build_from, classifier, templates, descriptions, multi_label=True,
                                   multi_score=score, threshold=threshold, calibrate=calibrate,
                                   target_precision=target_precision),
               encoder=encoder, model=model, pretrained=pretrained, run=options, cache=cache, cache_dir=cache_dir,
               ray=ray)
    from ..job.collection import over_collection

    head, batches = over_collection(job.head, job.features())  # the collection score: statistics of every image
    columns = _columns(data_names, head.multilabel.classnames)
    metrics = MultiLabelMetrics(data_names)
    softmax, cosine = MultiLabelMetrics(data_names), MultiLabelMetrics(data_names)
    positive = head.multilabel.positive
    failures: list[dict] = []
    start = time.perf_counter()
    for batch in batches:
        failures += [{"path": n, "error": e} for n, e in zip(batch.ids, batch.errors, strict=True) if e]
        if not len(batch.features):
            continue
        sets = batch.good_label_sets()
        metrics.update(head.scores(batch.features)[:, columns], sets)
        softmax.update(positive.logits(batch.features).softmax(dim=-1)[:, columns], sets)
        cosine.update((batch.features.float() @ positive.weights)[:, columns], sets)
    seconds = time.perf_counter() - start
    if not metrics.count:
        first = f"; first: {failures[0]['path']}: {failures[0]['error']}" if failures else ""
        raise InputError(f"none of the {len(failures)} images could be read{first}")
    thresholds = head.multilabel.thresholds[columns]
    result = metrics.result(thresholds)
    calibration = _calibration(metrics, head.multilabel.score, data_names)
    comparison = {head.multilabel.score: result["mAP"], "softmax": softmax.result()["mAP"],
                  "cosine (= standardised ranking)": cosine.result()["mAP"]}
    headline = ("mAP", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall")
    used = job.encoder.name if job.encoder is not None else (source.model or positive.provenance.get("model"))
    return {
        "dataset": dataset or os.path.basename(os.fspath(data).rstrip("/")), "model": used,
        "pretrained": (getattr(job.encoder, "pretrained", None) if job.encoder is not None else
                       source.pretrained or positive.provenance.get("pretrained")) or "",
        "task": "multilabel_classification", "language": "en",
        "metrics": {key: result[key] for key in headline},
        "score": head.multilabel.score, "thresholds": head.multilabel.calibration,
        "per_label_threshold": dict(zip(data_names, thresholds.tolist(), strict=True)),
        "per_label_ap": result["per_label_ap"], "per_label": result["per_label"],
        "label_counts": result["label_counts"], "score_comparison": comparison, "calibration": calibration,
        "num_images": result["num_images"], "num_failed": len(failures), "failures": failures,
        "images_per_second": round(result["num_images"] / seconds, 2) if seconds > 0 else 0.0,
        "classnames": data_names,
    }


#: The multi-label scores that are probabilities (the others are standardised cosines: no calibration to measure).
PROBABILITY_SCORES = ("negative", "sigmoid", "softmax")


def _calibration(metrics: MultiLabelMetrics, score: str, data_names: list[str]) -> dict:
    """ECE, Brier and NLL of the head's per-label probabilities (``label_calibration``), or why there are none."""
    from ..calibration.measures import label_calibration

    if score not in PROBABILITY_SCORES:
        return {"ece": None, "brier": None, "nll": None,
                "note": f"the {score} score is a standardised cosine, not a probability: its calibration is its "
                        "thresholds (eval --calibrate)"}
    scores, truth = metrics.arrays()
    measured = label_calibration(scores.numpy(), truth.numpy())
    measured["per_label_ece"] = dict(zip(data_names, measured["per_label_ece"], strict=True))
    return measured


def _columns(data_names: list[str], head_names: list[str]) -> torch.Tensor:
    lookup = {name: index for index, name in enumerate(head_names)}
    missing = [name for name in data_names if name not in lookup]
    if missing:
        raise InputError(f"the classifier has no label {missing[0]!r} ({len(missing)} of the data's {len(data_names)} "
                         "labels are missing): evaluate it on data of its own labels")
    return torch.tensor([lookup[name] for name in data_names], dtype=torch.long)


__all__ = ["evaluate_multilabel"]
