"""Open-set rejection: answer "none" for images that match none of the labels.

Plain softmax always picks a class. Two scores say how much an image looks like ANY class:

- ``mcm``: Maximum Concept Matching (Ming et al., NeurIPS 2022): the largest softmax of the
  image's cosine similarities to the class vectors at temperature 1 (not the model's ~100);
- ``max-prob``: the largest class probability at the model's own scale (MSP, the classic
  baseline; per-class sigmoid for sigmoid-trained models).

An image is rejected when its score is below a threshold: a fixed one, or one calibrated on
images of known classes so that a target share of them (the true-positive rate) is kept.
``auroc`` and ``fpr_at_tpr`` measure how well a score separates known from unknown images,
with known = positive, as in the OOD literature.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..classifier.zeroshot import ZeroShotClassifier
from ..errors import InputError
from .names import DEFAULT_REJECT_LABEL, SCORES


def mcm_score(classifier: ZeroShotClassifier, features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MCM: max_i softmax(cos(f, w_i) / temperature) per image, [B]."""
    similarities = features.float() @ classifier.weights
    return (similarities / temperature).softmax(dim=-1).max(dim=-1).values


def max_probability(classifier: ZeroShotClassifier, features: torch.Tensor) -> torch.Tensor:
    """The classifier's largest class probability per image (softmax, or sigmoid for SigLIP), [B]."""
    return classifier.probabilities(features).max(dim=-1).values


def openset_scores(classifier: ZeroShotClassifier, features: torch.Tensor, score: str = "mcm") -> torch.Tensor:
    """The open-set score ``score`` ("mcm" or "max-prob") for normalised features [B, D]: higher = known."""
    if score == "mcm":
        return mcm_score(classifier, features)
    if score == "max-prob":
        return max_probability(classifier, features)
    raise InputError(f"unknown open-set score {score!r}: use {' or '.join(SCORES)}")


def calibrate_threshold(known_scores: torch.Tensor | np.ndarray | Iterable[float], tpr: float = 0.95) -> float:
    """The largest threshold that keeps at least ``tpr`` of the known images (score >= threshold)."""
    if not 0.0 < tpr <= 1.0:
        raise InputError(f"target true-positive rate {tpr} is out of range: use a value in (0, 1], e.g. 0.95")
    scores = np.sort(_numpy(known_scores))[::-1]
    if len(scores) == 0:
        raise InputError("no known-class images to calibrate the rejection threshold on")
    keep = max(1, math.ceil(tpr * len(scores) - 1e-9))
    return float(scores[keep - 1])


def auroc(known_scores, unknown_scores) -> float:
    """Area under the ROC curve, known images positive: P(known score > unknown score) with ties
    counted half (the Mann-Whitney U statistic, as scikit-learn's ``roc_auc_score``)."""
    known, unknown = _numpy(known_scores), _numpy(unknown_scores)
    if len(known) == 0 or len(unknown) == 0:
        raise InputError("AUROC needs both known and unknown images")
    scores = np.concatenate([known, unknown])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first copy
    ranks = first_rank[inverse] + (counts[inverse] - 1) / 2.0 + 1.0  # average 1-based rank of ties
    rank_sum = ranks[: len(known)].sum()
    u = rank_sum - len(known) * (len(known) + 1) / 2.0
    return float(u / (len(known) * len(unknown)))


def fpr_at_tpr(known_scores, unknown_scores, tpr: float = 0.95) -> float:
    """Share of unknown images kept at the threshold that keeps ``tpr`` of the known ones (FPR95)."""
    threshold = calibrate_threshold(known_scores, tpr)
    unknown = _numpy(unknown_scores)
    if len(unknown) == 0:
        raise InputError("FPR needs unknown images")
    return float((unknown >= threshold).mean())


@dataclass
class Rejector:
    """Reject an image when its ``score`` is below ``threshold``; rejected images are labelled ``label``."""

    threshold: float
    score: str = "mcm"
    label: str = DEFAULT_REJECT_LABEL
    calibration: dict = field(default_factory=dict)  # how the threshold was chosen, for the record

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"unknown open-set score {self.score!r}: use {' or '.join(SCORES)}")
        if not math.isfinite(self.threshold):
            raise InputError(f"rejection threshold {self.threshold} is not a finite number")
        if not self.label.strip():
            raise InputError("the label for rejected images is empty: use e.g. 'none' or 'unknown'")

    def scores(self, classifier: ZeroShotClassifier, features: torch.Tensor) -> torch.Tensor:
        return openset_scores(classifier, features, self.score)

    def accepts(self, scores: torch.Tensor) -> torch.Tensor:
        """True where an image is kept (score >= threshold)."""
        return scores >= self.threshold

    @classmethod
    def calibrate(cls, classifier: ZeroShotClassifier, known_features: Iterable[torch.Tensor], tpr: float = 0.95,
                  score: str = "mcm", label: str = DEFAULT_REJECT_LABEL) -> Rejector:
        """A threshold keeping ``tpr`` of the known images whose features [B, D] batches are streamed
        (one float per image is kept)."""
        collected = [openset_scores(classifier, batch, score) for batch in known_features if len(batch)]
        scores = torch.cat(collected) if collected else torch.empty(0)
        threshold = calibrate_threshold(scores, tpr)
        return cls(threshold, score, label, {"tpr": tpr, "num_images": len(scores)})


def reject_labels(labels: list[list[str]], accepted: torch.Tensor,
                  label: str = DEFAULT_REJECT_LABEL) -> list[list[str]]:
    """Flat top-k label lists with rejected rows replaced by ``[label]`` (for --labels with --reject)."""
    return [names if bool(keep) else [label] for names, keep in zip(labels, accepted.tolist(), strict=True)]


class OpenSetMetrics:
    """Streams known and unknown images' scores (both scores at once) and reports AUROC and FPR95.

    One float per image and score is kept: AUROC needs the ranks of all of them.
    """

    def __init__(self, scores: Iterable[str] = SCORES, tpr: float = 0.95) -> None:
        self.names = tuple(scores)
        self.tpr = tpr
        self.known: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.unknown: dict[str, list[np.ndarray]] = {name: [] for name in self.names}

    def update(self, classifier: ZeroShotClassifier, features: torch.Tensor, known: bool) -> None:
        if not len(features):
            return
        target = self.known if known else self.unknown
        for name in self.names:
            target[name].append(openset_scores(classifier, features, name).cpu().numpy())

    def result(self) -> dict:
        out: dict = {}
        for name in self.names:
            known = np.concatenate(self.known[name]) if self.known[name] else np.empty(0)
            unknown = np.concatenate(self.unknown[name]) if self.unknown[name] else np.empty(0)
            entry = {"num_known": len(known), "num_unknown": len(unknown), "auroc": None,
                     f"fpr{round(self.tpr * 100)}": None, f"threshold_at_tpr{round(self.tpr * 100)}": None}
            if len(known):
                entry[f"threshold_at_tpr{round(self.tpr * 100)}"] = calibrate_threshold(known, self.tpr)
            if len(known) and len(unknown):
                entry["auroc"] = auroc(known, unknown)
                entry[f"fpr{round(self.tpr * 100)}"] = fpr_at_tpr(known, unknown, self.tpr)
            out[name] = entry
        return out


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy().ravel()
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()


__all__ = ["SCORES", "DEFAULT_REJECT_LABEL", "mcm_score", "max_probability", "openset_scores", "calibrate_threshold",
           "auroc", "fpr_at_tpr", "Rejector", "reject_labels", "OpenSetMetrics"]
