"""``--transductive``: classify a whole collection, then correct every answer with what the collection's
scores say about its classes (``zsclip.calibration.transductive``), and only then hand out the rows.

Pass one streams the job's features (locally or on Ray: the scores are the driver's either way) through
the flat head's classifier and keeps each image's log-probabilities in a temporary file (``ScoreBuffer``);
the correction is a per-class log-weight fitted over all of them; pass two reads the file back and answers
each image with softmax(log p + log w), top-k as the head would. The source is read once, the rows come
out in input order, and a sink still writes them atomically.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..calibration.measures import log_softmax
from ..calibration.scores import ScoreBuffer
from ..calibration.transductive import class_log_weights
from ..heads.base import NOT_FINITE, Prediction
from ..job import Job


def head_log_probabilities(classifier, features) -> np.ndarray:
    """log softmax of the classifier's logits (temperature included) for a batch of features, as numpy."""
    if isinstance(features, np.ndarray):
        logits = classifier.array_logits(features)
    else:
        logits = classifier.logits(features).detach().float().cpu().numpy()
    return log_softmax(logits).astype(np.float32)


def transductive_answers(job: Job, method: str, info: dict | None = None) -> Iterator[Prediction]:
    """Every input's answer, in order, corrected over the collection by ``method``; ``info`` (if given)
    receives the method, the estimated prior and the iterations."""
    head = job.head
    classifier = head.classifier
    names = classifier.classnames
    top_k = max(1, min(getattr(head, "top_k", 5), len(names)))
    rows: list[tuple[str, str | None, tuple | None]] = []  # (name, error, span); error None: a buffered row
    with ScoreBuffer(len(names)) as buffer:
        for batch in job.features():
            spans = batch.spans or [None] * len(batch.ids)
            finite = np.zeros(0, bool)
            if len(batch.values):
                scores = head_log_probabilities(classifier, batch.values)
                finite = np.isfinite(scores).all(axis=1)
                buffer.append(scores[finite])
            good = iter(finite.tolist())
            for name, error, span in zip(batch.ids, batch.errors, spans, strict=True):
                if error is None and not next(good):
                    error = NOT_FINITE
                rows.append((name, error, span))
        fitted = class_log_weights(method, buffer.chunks, len(names))
        if info is not None:
            info.update({"method": method, "prior": fitted["prior"].tolist(), "iterations": fitted["iterations"]})
        log_w = fitted["log_weights"]
        chunks = (_top_k(block, log_w, top_k) for block in buffer.chunks())
        labels, scores, position = np.zeros((0, top_k), np.int64), np.zeros((0, top_k)), 0
        for name, error, span in rows:
            if error is not None:
                answer = Prediction(name, [], [], error)
            else:
                if position == len(labels):
                    (labels, scores), position = next(chunks), 0
                answer = Prediction(name, [names[i] for i in labels[position]], scores[position].tolist())
                position += 1
            if span is not None:
                answer.start, answer.end = span
            yield answer


def _top_k(block: np.ndarray, log_w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, probabilities) [b, k] of softmax(log p + log w) per row, best first (ties: lower index)."""
    corrected = block.astype(np.float64) + log_w
    corrected = np.exp(corrected - corrected.max(axis=1, keepdims=True))
    corrected /= corrected.sum(axis=1, keepdims=True)
    order = np.argsort(-corrected, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(corrected, order, axis=1)


__all__ = ["transductive_answers", "head_log_probabilities"]
