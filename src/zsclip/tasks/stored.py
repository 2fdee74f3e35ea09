"""Store jobs under their round-2 names: each is the one job (a store source and a head) with the
store as its source. No image is decoded; the store streams, so memory stays flat at any size."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from ..classifier import ZeroShotClassifier
from ..encoders.base import Encoder
from ..heads import FlatHead, Prediction, RejectingHead
from ..job import Job, StoreSource, is_store
from ..options import RunOptions
from ..store import EmbeddingStore
from .classify import answers
from .evaluate import EvalResult, evaluate
from .scores import StoreScores, classify_store_arrays, store_scores
from .search import search_store


def classify_store(store: EmbeddingStore, classifier: ZeroShotClassifier, *, top_k: int = 5,
                   scale: float | None = None, rejector=None, batch_size: int = 8192) -> Iterator[Prediction]:
    """A ``Prediction`` per image of the store's view, in store order; failed images keep their error."""
    store.check_classifier(classifier)
    head = FlatHead(classifier, top_k, scale)
    source = StoreSource(store, batch_size).unlabelled()
    return answers(Job(source, head if rejector is None else RejectingHead(head, rejector), None, RunOptions()))


def evaluate_store(store: EmbeddingStore, encoder: Encoder, template_sets: str | Sequence[str] = "openai-imagenet",
                   *, classes=None, precision: str = "auto", cache: bool = True,
                   cache_dir: str | os.PathLike | None = None) -> EvalResult:
    """``evaluate`` over a store made from a labelled collection: the same metrics, no image decoded."""
    return evaluate(os.fspath(store.folder), encoder, template_sets, classes=classes,
                    options=RunOptions(precision=precision), cache=cache, cache_dir=cache_dir)


__all__ = ["StoreScores", "classify_store", "classify_store_arrays", "evaluate_store", "is_store", "search_store",
           "store_scores"]
