"""Accept-or-review: the confidence above which a classifier's top-1 answers reach a target precision.

The table is made once, on labelled calibration images (``zsclip calibrate``), from each image's calibrated
top-1 confidence and whether that answer was right; it is kept in the classifier file, so any target
precision can be asked later without the images. The threshold for precision P is the lowest confidence
at which the images accepted (confidence >= threshold) are right at least P of the time on the calibration
images: the most images accepted at that precision. It is an estimate from those images: the table says
how many it rests on, and a threshold that accepts fewer than ``MIN_ACCEPTED`` of them carries a warning.

API for other parts (classify's ``accepted`` column, the labelling sorts):

    table = AcceptTable.from_predictions(confidences, correct)      # or AcceptTable.from_data(file entry)
    choice = table.threshold_for_precision(0.95)                     # AcceptThreshold
    choice.threshold, choice.precision, choice.accepted_share, choice.warning
    choice.accepts(confidence) -> bool
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A threshold resting on fewer accepted calibration images than this is reported with a warning.
MIN_ACCEPTED = 100
#: Distinct cut points kept in a file's table (beyond it, neighbouring confidences are merged).
MAX_POINTS = 4096


@dataclass(frozen=True)
class AcceptThreshold:
    """The threshold chosen for ``target`` and what it did on the calibration images."""

    target: float
    threshold: float          # accept an answer whose top-1 confidence is >= this (inf: accept nothing)
    precision: float | None   # on the calibration images accepted (None: none accepted)
    accepted: int             # calibration images accepted
    num_images: int           # calibration images in all
    warning: str | None = None

    @property
    def accepted_share(self) -> float:
        return self.accepted / self.num_images if self.num_images else 0.0

    def accepts(self, confidence: float) -> bool:
        return confidence >= self.threshold

    def to_data(self) -> dict:
        return {"target_precision": self.target, "threshold": None if math.isinf(self.threshold) else self.threshold,
                "calibration_precision": self.precision, "calibration_accepted": self.accepted,
                "calibration_images": self.num_images, "warning": self.warning}


@dataclass(frozen=True)
class AcceptTable:
    """Distinct confidences (cut points, highest first) with the calibration answers right / given at each."""

    confidence: np.ndarray  # [K] float64, decreasing
    correct: np.ndarray     # [K] int64: right answers whose confidence falls at this cut point
    total: np.ndarray       # [K] int64: answers at this cut point

    @property
    def num_images(self) -> int:
        return int(self.total.sum())

    @classmethod
    def from_predictions(cls, confidences: np.ndarray, correct: np.ndarray, max_points: int = MAX_POINTS
                         ) -> AcceptTable:
        """The table of top-1 ``confidences`` [n] and ``correct`` [n]; with more than ``max_points`` distinct
        confidences, runs of neighbours are merged onto their lowest (a threshold there accepts them all)."""
        confidences = np.asarray(confidences, dtype=np.float64)
        correct = np.asarray(correct, dtype=bool)
        values, inverse = np.unique(-confidences, return_inverse=True)  # increasing -c: decreasing c
        right = np.bincount(inverse, correct.astype(np.int64), minlength=len(values)).astype(np.int64)
        total = np.bincount(inverse, minlength=len(values)).astype(np.int64)
        points = -values
        if len(points) > max_points:
            group = np.minimum(np.arange(len(points)) * max_points // len(points), max_points - 1)
            last = np.r_[np.nonzero(np.diff(group))[0], len(points) - 1]
            points = points[last]
            right = np.bincount(group, right).astype(np.int64)
            total = np.bincount(group, total).astype(np.int64)
        return cls(points, right, total)

    def threshold_for_precision(self, target: float) -> AcceptThreshold:
        """The lowest cut point whose accepted images reach ``target`` precision (see the module's docstring)."""
        if not 0 < target <= 1:
            raise ValueError(f"target precision {target}: give a number in (0, 1], e.g. 0.95")
        n = self.num_images
        precision = np.cumsum(self.correct) / np.maximum(np.cumsum(self.total), 1)
        reached = np.nonzero(precision >= target - 1e-12)[0]
        if not len(reached):
            return AcceptThreshold(target, math.inf, None, 0, n,
                                   f"no confidence reaches precision {target:g} on the {n} calibration images: "
                                   "every answer goes to review")
        j = int(reached[-1])
        accepted = int(self.total[: j + 1].sum())
        warning = None
        if accepted < MIN_ACCEPTED:
            warning = (f"the threshold for precision {target:g} rests on {accepted} accepted calibration images "
                       f"(of {n}); fewer than {MIN_ACCEPTED} make it a rough estimate: calibrate on more images")
        return AcceptThreshold(target, float(self.confidence[j]), float(precision[j]), accepted, n, warning)

    def to_data(self) -> dict:
        return {"num_images": self.num_images, "confidence": [float(c) for c in self.confidence],
                "correct": self.correct.tolist(), "total": self.total.tolist()}

    @classmethod
    def from_data(cls, data: dict) -> AcceptTable:
        problem = table_problem(data)
        if problem:
            raise ValueError(problem)
        return cls(np.asarray(data["confidence"], dtype=np.float64), np.asarray(data["correct"], dtype=np.int64),
                   np.asarray(data["total"], dtype=np.int64))


def threshold_for_precision(confidences: np.ndarray, correct: np.ndarray, target: float) -> AcceptThreshold:
    """The accept threshold for ``target`` precision from calibration images' top-1 ``confidences`` and
    ``correct`` (shortcut for ``AcceptTable.from_predictions(...).threshold_for_precision(target)``)."""
    return AcceptTable.from_predictions(confidences, correct).threshold_for_precision(target)


def table_problem(data: object) -> str | None:
    """What is wrong with an accept table read from a file, or None."""
    if not isinstance(data, dict):
        return "the accept table is not an object"
    try:
        confidence = np.asarray(data["confidence"], dtype=np.float64)
        correct = np.asarray(data["correct"], dtype=np.int64)
        total = np.asarray(data["total"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        return "the accept table lacks numeric confidence / correct / total lists"
    if confidence.ndim != 1 or correct.shape != confidence.shape or total.shape != confidence.shape:
        return "the accept table's lists differ in length"
    if not np.isfinite(confidence).all() or (np.diff(confidence) >= 0).any() or (correct < 0).any() \
            or (correct > total).any():
        return "the accept table is not a decreasing list of confidences with counts"
    return None


__all__ = ["AcceptTable", "AcceptThreshold", "threshold_for_precision", "table_problem", "MIN_ACCEPTED"]
