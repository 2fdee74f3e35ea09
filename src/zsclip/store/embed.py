"""``embed``: encode images into a store, incrementally and resumably.

Before encoding, every input is compared with the store's view by its resolved path, size and
modification time: unchanged files (and files that failed before and have not changed) are
skipped, new and changed files are encoded, and files the view holds that no longer exist get a
``deleted`` row. Rows are committed every ``commit_every`` images (one shard each), so a killed
run loses at most the uncommitted shard, and running the same command again continues from there.

A row's file facts (size, mtime, SHA-256, width, height) describe the bytes its embedding was made
from: each file is stat'ed before it is decoded and again after its bytes are hashed, and a file
that changed in between (replaced or rewritten during the run) is encoded again (``RETRIES``
times), else recorded as an error without facts, so the next run encodes it; a stale embedding is
never stored under a newer file's facts.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..data.collections import LabelledSource, MultiLabelSource
from ..data.images import read_image_bytes
from ..data.sources import Source
from ..data.urls import is_url
from ..errors import ImageReadError
from ..options import RunOptions
from ..outputs.text import undecodable_escaped
from .defaults import COMMIT_EVERY
from .store import EmbeddingStore, checked_vectors

if TYPE_CHECKING:  # torch and the model load only when something is to be encoded
    from ..encoders.base import Encoder

#: How many more times a file that changed while it was being encoded is encoded again.
RETRIES = 2
CHANGED = "the file changed while it was being embedded (written to during the run?): run `zsclip embed` again"
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
    #: (input, text) of notes that are not failures (a video cut short: its readable clips were stored)
    notes: list[tuple[str, str]] = field(default_factory=list)


def identity(source: Source) -> str:
    """The key a row is known by: the resolved absolute path (links followed), or the URL. File-name
    bytes that are not UTF-8 are stored as ``\\xNN`` (Parquet strings are UTF-8)."""
    return source.name if is_url(source.name) else undecodable_escaped(os.path.realpath(source.name))


def _still_there(key: str) -> bool:
    """Whether the file a stored key names exists (its ``\\xNN`` escapes read back as bytes)."""
    if os.path.lexists(key):
        return True
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda match: bytes([int(match[1], 16)]), key.encode("utf-8"))
    return os.path.lexists(os.fsdecode(raw))


def embed(
    store: EmbeddingStore,
    sources: Sequence[Source],
    encoder: Encoder | None,
    options: RunOptions | None = None,
    *,
    commit_every: int = COMMIT_EVERY,
    on_progress: Callable[[int], None] | None = None,
    remove_missing: bool = True,
    features: FeatureSource | None = None,
    load_encoder: Callable[[], Encoder] | None = None,
) -> EmbedReport:
    """Add what is new or changed among ``sources`` to ``store`` (see the module docstring).

    ``features(sources)`` yields (names, errors, features of the decoded ones) per batch, in order:
    the local pipeline by default, a Ray Data job for ``--ray`` (zsclip.cluster); either way the
    rows and shards written are the same, so the two can continue each other's work.
    ``encoder`` None and ``load_encoder``: the model is loaded (and checked against the store) only
    when some file is new or changed, so a rerun with nothing new needs neither torch nor the model."""
    options = options or RunOptions()
    if features is None:
        def features(chunk: Sequence[Source]):
            from ..pipeline import feature_batches

            return feature_batches(list(chunk), encoder, options)
    if encoder is not None:
        store.check_encoder(encoder)
    elif load_encoder is None:
        raise TypeError("embed() needs an encoder, or load_encoder to load one when a file is to be encoded")
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
        if todo and encoder is None:
            encoder = load_encoder()
            store.check_encoder(encoder)
        writer = _ShardWriter(store, commit_every, report)
        if remove_missing:
            for key in known:
                # a video clip's row (VIDEO#t=START-END) is gone when its video is
                if key not in wanted and not is_url(key) and not _still_there(key.split("#t=", 1)[0]):
                    writer.add({"path": key, "resolved": key, "deleted": True}, None)
                    report.deleted += 1
        for attempt in range(RETRIES + 1):
            changed: list[Source] = []
            before = [_snapshot(source) for source in todo]  # taken before the pipeline reads any of them
            pending = iter(zip(todo, before, strict=True))
            for names, errors, batch_features in (features(todo) if todo else ()):
                row_features = iter(np.asarray(batch_features))
                for _name, error in zip(names, errors, strict=True):
                    source, snapshot = next(pending)
                    vector = next(row_features) if error is None else None
                    row = _facts(source, snapshot)
                    if row is None and attempt < RETRIES:
                        changed.append(source)  # encoded again below, from its new bytes
                        continue
                    if row is None:
                        row, error = _unknown_facts(source), CHANGED
                    if error is None:
                        problems, _ = checked_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1))
                        error = problems[0] and f"the model gave an unusable embedding ({problems[0]})"
                    if error is not None:
                        row["error"] = error
                        vector = None
                        report.failed += 1
                    else:
                        report.encoded += 1
                    writer.add(row, vector)
                if on_progress and attempt == 0:
                    on_progress(len(names))
            todo = changed
            if not todo:
                break
        writer.flush()
    return report


class _ShardWriter:
    """Rows gathered and committed ``commit_every`` at a time."""

    def __init__(self, store: EmbeddingStore, commit_every: int, report: EmbedReport) -> None:
        self.store, self.commit_every, self.report = store, commit_every, report
        self.rows: list[dict] = []
        self.vectors: list[np.ndarray | None] = []

    def add(self, row: dict, vector: np.ndarray | None) -> None:
        self.rows.append(row)
        self.vectors.append(vector)
        if len(self.rows) >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.store.append(self.rows, self.vectors)
            self.report.shards += 1
            self.rows, self.vectors = [], []


def _stat(source: Source) -> tuple[int | None, int | None]:
    """(size, mtime_ns): what a row records and what the next run compares to skip a file."""
    snapshot = _snapshot(source)
    return (None, None) if snapshot is None else snapshot[:2]


def _snapshot(source: Source) -> tuple[int, ...] | None:
    """What changes whenever a file's bytes may have: size, mtime, and the inode and ctime (a file
    replaced by a rename is another inode; any write moves ctime, which no program can set back)."""
    if is_url(source.name) or source.error is not None:
        return None
    try:
        info = os.stat(source.name)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_ctime_ns)


def _unknown_facts(source: Source) -> dict:
    """A row with no file facts (the next run compares them with the file's and encodes it again)."""
    row = {"path": undecodable_escaped(source.name), "resolved": identity(source), "size": None, "mtime_ns": None,
           "deleted": False,
           "label": source.target if isinstance(source, LabelledSource) and source.target >= 0 else None}
    if isinstance(source, MultiLabelSource):
        row["labels"] = list(source.labels)
    return row


def _facts(source: Source, before: tuple[int, ...] | None) -> dict | None:
    """A row's file facts: path, resolved, size, mtime, SHA-256 of the bytes, width and height; or
    None when the file is not the one ``before`` (its snapshot taken before it was decoded)
    describes: then the embedding may be of other bytes than these facts."""
    row = _unknown_facts(source)
    if source.error is None and not is_url(source.name):
        try:
            data = read_image_bytes(source.name)
            row["sha256"] = hashlib.sha256(data).hexdigest()
            with Image.open(io.BytesIO(data)) as image:
                row["width"], row["height"] = image.size
        except (ImageReadError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass  # the row's error (from decoding) says what is wrong with the file
    if _snapshot(source) != before:  # taken after the bytes were hashed: the same file throughout
        return None
    if before is not None:
        row["size"], row["mtime_ns"] = before[:2]
    return row


__all__ = ["COMMIT_EVERY", "RETRIES", "EmbedReport", "embed", "identity"]
