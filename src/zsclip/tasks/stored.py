"""Classify, evaluate and search an embedding store: no image is decoded, a classifier head is one
matmul per batch of stored embeddings (the store streams them: memory stays flat at any size)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

import torch

from ..classifier import ZeroShotClassifier
from ..encoders.base import Encoder
from ..errors import InputError
from ..store import EmbeddingStore
from ..store.format import StoreError
from .classify import Prediction
from .evaluate import EvalResult, NothingDecodedError
from .metrics import StreamingMetrics


def classify_store(store: EmbeddingStore, classifier: ZeroShotClassifier, *, top_k: int = 5,
                   scale: float | None = None, rejector=None, batch_size: int = 8192) -> Iterator[Prediction]:
    """A ``Prediction`` per image of the store's view, in store order; failed images keep their error."""
    store.check_classifier(classifier)
    for batch in store.batches(batch_size):
        features = torch.from_numpy(batch.embeddings)
        if len(features):
            scores, indices = classifier.top_k(features, top_k, scale)
            kept = rejector.scores(classifier, features).tolist() if rejector is not None else []
        row = 0
        for path, error in zip(batch.paths, batch.errors, strict=True):
            if error is not None:
                yield Prediction(path, [], [], error)
                continue
            if rejector is not None and kept[row] < rejector.threshold:
                yield Prediction(path, [rejector.label], [kept[row]])
            else:
                yield Prediction(path, [classifier.classnames[i] for i in indices[row].tolist()], scores[row].tolist())
            row += 1


def evaluate_store(store: EmbeddingStore, encoder: Encoder, template_sets: str | Sequence[str] = "openai-imagenet",
                   *, classes=None, precision: str = "auto", cache: bool = True,
                   cache_dir: str | os.PathLike | None = None) -> EvalResult:
    """``evaluate`` over a store made from a labelled collection: the same metrics, no image decoded."""
    if not store.classnames:
        raise StoreError(f"store {store.folder} has no labels: embed a labelled collection (`zsclip embed DATA "
                         "--labelled`) to evaluate from it")
    template_sets = [template_sets] if isinstance(template_sets, str) else list(template_sets)
    if not template_sets:
        raise InputError("template sets: name at least one, e.g. openai-imagenet")
    store.check_encoder(encoder)
    classes = store.classnames if classes is None else classes
    classifiers = {name: ZeroShotClassifier.build(encoder, classes, name, precision=precision, cache=cache,
                                                  cache_dir=cache_dir) for name in template_sets}
    metrics = {name: StreamingMetrics(len(store.classnames)) for name in template_sets}
    failures: list[dict] = []
    start = time.perf_counter()
    for batch in store.batches():
        failures += [{"path": p, "error": e} for p, e in zip(batch.paths, batch.errors, strict=True) if e]
        targets = torch.tensor([t for t, e in zip(batch.labels, batch.errors, strict=True) if e is None])
        if len(targets):
            features = torch.from_numpy(batch.embeddings)
            for name, classifier in classifiers.items():
                metrics[name].update(classifier.logits(features), targets)
    seconds = time.perf_counter() - start
    if not any(m.count for m in metrics.values()):
        raise NothingDecodedError(f"store {store.folder} holds no embedded image to evaluate", failures)
    results = {name: m.result() for name, m in metrics.items()}
    count = next(iter(results.values()))["num_images"]
    return EvalResult(list(store.classnames), results, failures, count, count / seconds if seconds > 0 else 0.0)


def search_store(store: EmbeddingStore, query: torch.Tensor, top_k: int = 10,
                 batch_size: int = 8192) -> list[tuple[str, float]]:
    """The ``top_k`` stored images nearest to ``query`` (a normalised [D] text or image feature),
    by cosine similarity, best first; a running top-k per batch keeps memory flat."""
    if top_k < 1:
        raise InputError(f"--top-k {top_k}: ask for at least one result")
    query = query.float().reshape(-1)
    if query.numel() != store.embed_dim:
        raise StoreError(f"a query of width {query.numel()} cannot search a store of width {store.embed_dim}: "
                         "use the store's model")
    best_scores = torch.empty(0)
    best_paths: list[str] = []
    for batch in store.batches(batch_size):
        if not len(batch.embeddings):
            continue
        good = [p for p, e in zip(batch.paths, batch.errors, strict=True) if e is None]
        scores = torch.from_numpy(batch.embeddings) @ query
        merged = torch.cat([best_scores, scores])
        keep = merged.topk(min(top_k, len(merged))).indices
        paths = best_paths + good
        best_scores, best_paths = merged[keep], [paths[i] for i in keep.tolist()]
    return list(zip(best_paths, best_scores.tolist(), strict=True))


def is_store(path: str | os.PathLike) -> bool:
    """True for a folder holding a zsclip store (local or at a pyarrow filesystem URI) or a
    clip-retrieval output."""
    from ..store.format import MANIFEST

    folder = os.fspath(path)
    if "://" in folder and not folder.lower().startswith(("http://", "https://")):
        from ..store.location import Location

        try:
            return Location(folder).exists(MANIFEST)
        except StoreError:
            return False
    return os.path.isdir(folder) and (os.path.isfile(os.path.join(folder, MANIFEST))
                                      or os.path.isdir(os.path.join(folder, "img_emb")))


__all__ = ["classify_store", "evaluate_store", "is_store", "search_store"]
