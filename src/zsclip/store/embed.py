"""``embed``: encode images into a store, incrementally and resumably.

Before encoding, every input is compared with the store's view by its resolved path, size and
modification time: unchanged files (and files that failed before and have not changed) are
skipped, new and changed files are encoded, and files the view holds that no longer exist get a
``deleted`` row. Rows are committed every ``commit_every`` images (one shard each), so a killed
run loses at most the uncommitted shard, and running the same command again continues from there.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..data.collections import LabelledSource
from ..data.images import read_image_bytes
from ..data.sources import Source
from ..data.urls import is_url
from ..encoders.base import Encoder
from ..errors import ImageReadError
from ..options import RunOptions
from ..pipeline import feature_batches
from .store import EmbeddingStore

COMMIT_EVERY = 1024
#: Where embeddings come from: sources -> (names, errors, features [n_ok, D]) per batch, in order.
FeatureSource = Callable[[Sequence[Source]], Iterable[tuple[list[str], list[str | None], Any]]]


@dataclass
class EmbedReport:
    """What one ``embed`` run did."""

    encoded: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    shards: int = 0


def identity(source: Source) -> str:
    """The key a row is known by: the resolved absolute path (links followed), or the URL."""
    return source.name if is_url(source.name) else os.path.realpath(source.name)


def embed(
    store: EmbeddingStore,
    sources: Sequence[Source],
    encoder: Encoder,
    options: RunOptions | None = None,
    *,
    commit_every: int = COMMIT_EVERY,
    on_progress: Callable[[int], None] | None = None,
    remove_missing: bool = True,
    features: FeatureSource | None = None,
) -> EmbedReport:
    """Add what is new or changed among ``sources`` to ``store`` (see the module docstring).

    ``features(sources)`` yields (names, errors, features of the decoded ones) per batch, in order:
    the local pipeline by default, a Ray Data job for ``--ray`` (zsclip.cluster); either way the
    rows and shards written are the same, so the two can continue each other's work."""
    options = options or RunOptions()
    if features is None:
        def features(chunk: Sequence[Source]):
            return feature_batches(list(chunk), encoder, options)
    store.check_encoder(encoder)
    report = EmbedReport()
    with store.writing():
        known = store.facts()
        todo: list[Source] = []
        wanted: set[str] = set()
        for source in sources:
            key = identity(source)
            wanted.add(key)
            if key in known and known[key] == _stat(source):
                report.skipped += 1
                continue
            todo.append(source)
        if on_progress and report.skipped:
            on_progress(report.skipped)
        rows: list[dict] = []
        vectors: list[np.ndarray | None] = []
        if remove_missing:
            for key in known:
                if key not in wanted and not is_url(key) and not os.path.lexists(key):
                    rows.append({"path": key, "resolved": key, "deleted": True})
                    vectors.append(None)
                    report.deleted += 1
        pending = iter(todo)
        for names, errors, batch_features in (features(todo) if todo else ()):
            row_features = iter(np.asarray(batch_features))
            for _name, error in zip(names, errors, strict=True):
                row = _facts(next(pending))
                if error is not None:
                    row["error"] = error
                    vectors.append(None)
                    report.failed += 1
                else:
                    vectors.append(next(row_features))
                    report.encoded += 1
                rows.append(row)
                if len(rows) >= commit_every:
                    store.append(rows, vectors)
                    report.shards += 1
                    rows, vectors = [], []
            if on_progress:
                on_progress(len(names))
        if rows:
            store.append(rows, vectors)
            report.shards += 1
    return report


def _stat(source: Source) -> tuple[int | None, int | None]:
    if is_url(source.name) or source.error is not None:
        return (None, None)
    try:
        info = os.stat(source.name)
        return (info.st_size, info.st_mtime_ns)
    except OSError:
        return (None, None)


def _facts(source: Source) -> dict:
    """A row's file facts: path, resolved, size, mtime, SHA-256 of the bytes, width and height."""
    size, mtime = _stat(source)
    row = {"path": source.name, "resolved": identity(source), "size": size, "mtime_ns": mtime, "deleted": False,
           "label": source.target if isinstance(source, LabelledSource) and source.target >= 0 else None}
    if source.error is None and not is_url(source.name):
        try:
            data = read_image_bytes(source.name)
            row["sha256"] = hashlib.sha256(data).hexdigest()
            with Image.open(io.BytesIO(data)) as image:
                row["width"], row["height"] = image.size
        except (ImageReadError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass  # the row's error (from decoding) says what is wrong with the file
    return row


__all__ = ["COMMIT_EVERY", "EmbedReport", "embed", "identity"]
