"""Calibration measures of a classifier's top-1 confidence, streamed.

Definitions (each the usual one):

- **ECE** (Guo et al. 2017): confidences (the top-1 probability) fall into ``ECE_BINS`` = 15 equal-width
  bins (i/15, (i+1)/15]; ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|.
- **NLL**: the mean of -log p(true class).
- **Brier score**: the mean over images of sum over classes (p_c - [c = true])^2 (Brier 1950's
  multi-class form; 0 is perfect, 2 the worst).
- **Risk-coverage** (selective classification, Geifman & El-Yaniv 2017): images sorted by confidence,
  most confident first; at coverage k/n the risk is the error rate of the k most confident. **AURC** is
  the mean of the risk over k = 1..n. Ties in confidence are ordered errors-last, so the curve does not
  depend on the order images arrived in.

Every figure but the risk-coverage curve is a sum of per-block counts (``state`` / ``absorb``), so the
measures of disjoint blocks (Ray tasks, shards) add up exactly. The risk-coverage curve needs each image's
confidence and correctness: kept as 5 bytes per image (float32 + bool), 5 MB per million images.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
#: Points of the risk-coverage curve kept in results (the area is computed on every image).
CURVE_POINTS = 101


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ece_bin(confidences: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence: bin i holds (i/bins, (i+1)/bins]; a confidence of 0 goes to bin 0."""
    return np.clip(np.ceil(np.asarray(confidences, dtype=np.float64) * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of top-1 ``confidences`` [n] with ``correct`` [n] (bool), as defined above."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    which = ece_bin(confidences, bins)
    gap = np.abs(np.bincount(which, correct, minlength=bins) - np.bincount(which, confidences, minlength=bins))
    return float(gap.sum() / max(len(confidences), 1))


def risk_coverage(confidences: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(coverage [n], risk [n], AURC): risk at coverage k/n is the error rate of the k most confident images."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if not len(confidences):
        return np.zeros(0), np.zeros(0), float("nan")
    order = np.lexsort((~correct, -confidences))  # most confident first; among ties, correct ones first
    errors = np.cumsum(~correct[order])
    accepted = np.arange(1, len(order) + 1)
    risk = errors / accepted
    return accepted / len(order), risk, float(risk.mean())


def label_calibration(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Calibration of multi-label probabilities [n, C] against truth [n, C] (bool): every (image, label) pair is
    a yes/no event with its own probability, as multi-label heads answer. ``ece``: the 15 equal-width bins of
    the probabilities, |observed frequency - mean probability| weighted by the bin's share (the binary form of
    the ECE above, as torchmetrics' binary calibration error computes it; ``reliability``: its bins, with the
    observed frequency as "accuracy"); ``brier``: mean (p - y)^2; ``nll``:
    mean binary cross-entropy (p clipped to [1e-12, 1 - 1e-12]); ``per_label_ece``: the same ECE per label."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(truth, dtype=bool)
    if not p.size:
        return {"ece": None, "brier": None, "nll": None, "per_label_ece": []}
    clipped = np.clip(p, 1e-12, 1 - 1e-12)
    which = ece_bin(p.ravel(), bins)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, p.ravel(), minlength=bins)
    seen = np.bincount(which, y.ravel().astype(np.float64), minlength=bins)
    reliability = [{"low": i / bins, "high": (i + 1) / bins, "count": int(n),
                    "confidence": float(c / n) if n else None, "accuracy": float(k / n) if n else None}
                   for i, (n, c, k) in enumerate(zip(count, mean_p, seen, strict=True))]
    return {"ece": expected_calibration_error(p.ravel(), y.ravel(), bins), "ece_bins": bins,
            "reliability": reliability,
            "brier": float(((p - y) ** 2).mean()),
            "nll": float(-(y * np.log(clipped) + ~y * np.log1p(-clipped)).mean()),
            "per_label_ece": [expected_calibration_error(p[:, c], y[:, c], bins) for c in range(p.shape[1])]}


class CalibrationMeasures:
    """ECE bins, NLL, Brier and the per-image (confidence, correct) pairs, accumulated batch by batch."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.bins = bins
        self.bin_count = np.zeros(bins, dtype=np.int64)
        self.bin_confidence = np.zeros(bins, dtype=np.float64)
        self.bin_correct = np.zeros(bins, dtype=np.int64)
        self.nll_sum = 0.0
        self.brier_sum = 0.0
        self.count = 0
        self._confidences: list[np.ndarray] = []
        self._correct: list[np.ndarray] = []

    def update(self, logits: np.ndarray, targets: np.ndarray) -> None:
        """Add a batch: ``logits`` [B, C] (probabilities are their softmax), ``targets`` [B] class indices."""
        logits = np.asarray(logits)
        targets = np.asarray(targets, dtype=np.int64)
        if not len(targets):
            return
        log_p = log_softmax(logits)
        p = np.exp(log_p)
        rows = np.arange(len(targets))
        predicted = p.argmax(axis=1)
        confidence = p[rows, predicted]
        correct = predicted == targets
        which = ece_bin(confidence, self.bins)
        self.bin_count += np.bincount(which, minlength=self.bins)
        self.bin_confidence += np.bincount(which, confidence, minlength=self.bins)
        self.bin_correct += np.bincount(which[correct], minlength=self.bins)
        self.nll_sum += float(-log_p[rows, targets].sum())
        onehot = np.zeros_like(p)
        onehot[rows, targets] = 1.0
        self.brier_sum += float(((p - onehot) ** 2).sum())
        self.count += len(targets)
        self._confidences.append(confidence.astype(np.float32))
        self._correct.append(correct)

    def state(self) -> dict:
        """The sums as plain data (``absorb`` adds another block's)."""
        return {"bin_count": self.bin_count.copy(), "bin_confidence": self.bin_confidence.copy(),
                "bin_correct": self.bin_correct.copy(), "nll_sum": self.nll_sum, "brier_sum": self.brier_sum,
                "count": self.count, "confidences": self.confidences, "correct": self.correct}

    def absorb(self, state: dict) -> None:
        """Add the sums of a disjoint block (another ``CalibrationMeasures.state()``)."""
        self.bin_count += np.asarray(state["bin_count"], dtype=np.int64)
        self.bin_confidence += np.asarray(state["bin_confidence"], dtype=np.float64)
        self.bin_correct += np.asarray(state["bin_correct"], dtype=np.int64)
        self.nll_sum += float(state["nll_sum"])
        self.brier_sum += float(state["brier_sum"])
        self.count += int(state["count"])
        self._confidences.append(np.asarray(state["confidences"], dtype=np.float32))
        self._correct.append(np.asarray(state["correct"], dtype=bool))

    @property
    def confidences(self) -> np.ndarray:
        return np.concatenate(self._confidences) if self._confidences else np.zeros(0, np.float32)

    @property
    def correct(self) -> np.ndarray:
        return np.concatenate(self._correct) if self._correct else np.zeros(0, bool)

    def result(self) -> dict:
        """``ece``, ``nll``, ``brier``, ``aurc``, the reliability bins and the risk-coverage curve (at most
        ``CURVE_POINTS`` points), or None figures without images."""
        if not self.count:
            return {"ece": None, "nll": None, "brier": None, "aurc": None, "reliability": [], "risk_coverage": []}
        ece = float(np.abs(self.bin_correct - self.bin_confidence).sum() / self.count)
        coverage, risk, aurc = risk_coverage(self.confidences, self.correct)
        keep = np.unique(np.linspace(0, len(coverage) - 1, min(CURVE_POINTS, len(coverage))).round().astype(int))
        reliability = [{"low": i / self.bins, "high": (i + 1) / self.bins, "count": int(n),
                        "confidence": float(c / n) if n else None, "accuracy": float(k / n) if n else None}
                       for i, (n, c, k) in enumerate(zip(self.bin_count, self.bin_confidence, self.bin_correct,
                                                         strict=True))]
        return {"ece": ece, "nll": self.nll_sum / self.count, "brier": self.brier_sum / self.count, "aurc": aurc,
                "ece_bins": self.bins, "reliability": reliability,
                "risk_coverage": [{"coverage": float(coverage[i]), "risk": float(risk[i])} for i in keep]}


__all__ = ["CalibrationMeasures", "ECE_BINS", "expected_calibration_error", "risk_coverage", "softmax",
           "log_softmax", "ece_bin", "label_calibration"]
