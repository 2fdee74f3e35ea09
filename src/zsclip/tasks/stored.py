"""Store jobs under their round-2 names: each is the one job (a store source and a head) with the
store as its source. No image is decoded; the store streams, so memory stays flat at any size."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..classifier import ZeroShotClassifier
from ..encoders.base import Encoder
from ..heads import FlatHead, Prediction, RejectingHead
from ..heads.base import NOT_FINITE
from ..job import Job, StoreSource, is_store
from ..options import RunOptions
from ..store import EmbeddingStore
from .classify import answers
from .evaluate import EvalResult, evaluate
from .search import search_store


def classify_store(store: EmbeddingStore, classifier: ZeroShotClassifier, *, top_k: int = 5,
                   scale: float | None = None, rejector=None, batch_size: int = 8192) -> Iterator[Prediction]:
    """A ``Prediction`` per image of the store's view, in store order; failed images keep their error."""
    store.check_classifier(classifier)
    head = FlatHead(classifier, top_k, scale)
    source = StoreSource(store, batch_size).unlabelled()
    return answers(Job(source, head if rejector is None else RejectingHead(head, rejector), None, RunOptions()))


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
    k = FlatHead(classifier, top_k, scale).top_k  # the head's own checks of top_k and scale
    names = list(classifier.classnames)
    k = min(k, len(names))
    for batch in StoreSource(store, batch_size).unlabelled().batches(None, RunOptions()):
        errors = list(batch.errors)
        every = errors.count(None) == len(errors)  # a sound shard's batch: answers used as they come
        rows = np.arange(len(errors)) if every else np.flatnonzero([error is None for error in errors])
        values = np.empty((0, k), dtype=np.float32)
        picked = np.empty((0, k), dtype=np.int64)
        if len(rows):  # the reader's rows are finite and of unit length (``checked_batch``): only scores are checked
            values, picked = classifier.top_k(batch.values, k, scale)
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


def evaluate_store(store: EmbeddingStore, encoder: Encoder, template_sets: str | Sequence[str] = "openai-imagenet",
                   *, classes=None, precision: str = "auto", cache: bool = True,
                   cache_dir: str | os.PathLike | None = None) -> EvalResult:
    """``evaluate`` over a store made from a labelled collection: the same metrics, no image decoded."""
    return evaluate(os.fspath(store.folder), encoder, template_sets, classes=classes,
                    options=RunOptions(precision=precision), cache=cache, cache_dir=cache_dir)


__all__ = ["StoreScores", "classify_store", "classify_store_arrays", "evaluate_store", "is_store", "search_store"]
