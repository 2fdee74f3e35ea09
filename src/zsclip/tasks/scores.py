"""A store's flat top-k answers as arrays, batch by batch: for programs that rank, filter or save millions of answers,
and for ``zsclip classify STORE -o out.csv``, which writes them a batch at a time. Nothing here imports torch: a
store's rows are classified with numpy (seconds less at the command's start)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..classifier import ZeroShotClassifier
from ..heads import FlatHead
from ..heads.base import NOT_FINITE
from ..job import Job, StoreSource
from ..options import RunOptions
from ..store import EmbeddingStore


@dataclass
class StoreScores:
    """One batch of a store's view classified, as arrays: for a program that ranks, filters or saves millions of
    answers, which a Python object per row would slow more than the matmul itself (docs/round4-store.md).
    Row ``i`` answers ``paths[i]``; a row with an error has index -1 and probability NaN in every place."""

    #: each row's path as embedded, and its identity (the resolved absolute path recorded then)
    paths: list[str]
    keys: list[str]
    errors: list[str | None]
    #: [n, k] class indices into ``classnames``, best first
    indices: np.ndarray
    #: [n, k] float32 probabilities (softmax over the classes; sigmoid per class for sigmoid models)
    scores: np.ndarray
    classnames: list[str]


def classify_store_arrays(store: EmbeddingStore, classifier: ZeroShotClassifier, *, top_k: int = 5,
                          scale: float | None = None, batch_size: int = 8192) -> Iterator[StoreScores]:
    """``classify_store``'s answers batch by batch as arrays (the same top-k and probabilities, bit for bit):
    a flat classifier only (trees, rejection and multi-label answer through ``classify`` / ``classify_store``)."""
    store.check_classifier(classifier)
    head = FlatHead(classifier, top_k, scale)  # the head's own checks of top_k and scale
    return _scored(StoreSource(store, batch_size).unlabelled(), head)


def store_scores(job: Job) -> Iterator[StoreScores] | None:
    """A planned job's answers as ``StoreScores`` when they are a flat head's top-k over a store read in this
    process (what ``zsclip classify STORE -c FILE -o out.csv`` writes a batch at a time); None for any other job
    (images, Ray, a tree, rejection, accept-or-review, a correction over the collection, video clips)."""
    head = job.head
    if (not isinstance(job.source, StoreSource) or job.source.timed or type(head) is not FlatHead
            or job.ray is not None or head.accept is not None or head.needs_collection):
        return None
    return _scored(job.source, head)


def _scored(source: StoreSource, head: FlatHead) -> Iterator[StoreScores]:
    classifier = head.classifier
    names = list(classifier.classnames)
    k = min(head.top_k, len(names))
    batches = source.batches(None, RunOptions(), ahead=False)  # read on the top-k's threads, between blocks
    for batch, values, picked in classifier.top_k_stream(batches, lambda batch: batch.values, k, head.scale):
        errors = list(batch.errors)
        every = errors.count(None) == len(errors)  # a sound shard's batch: answers used as they come
        rows = np.arange(len(errors)) if every else np.flatnonzero([error is None for error in errors])
        # the reader's rows are finite and of unit length (``checked_batch``): only scores are checked
        finite = np.isfinite(values).all(axis=1)
        if every and finite.all():
            indices, scores = picked, values
        else:
            indices = np.full((len(errors), k), -1, dtype=np.int64)
            scores = np.full((len(errors), k), np.nan, dtype=np.float32)
            for row in rows[~finite]:
                errors[row] = NOT_FINITE
            indices[rows[finite]], scores[rows[finite]] = picked[finite], values[finite]
        yield StoreScores(batch.ids, batch.keys or list(batch.ids), errors, indices, scores, names)


__all__ = ["StoreScores", "classify_store_arrays", "store_scores"]
