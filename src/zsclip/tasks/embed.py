"""Embed WebDataset shards into a store: the job's shard source as the feature source.

A sample's row is known by ``<resolved shard path>#<key>`` and carries its shard's size and
modification time, so a rerun skips every shard that has not changed since its samples were
stored, and a killed run resumes from the last committed store shard. Labels come with
``labelled`` shards (class names from ``--labels-file`` where the labels are indices). Image files
and folders go through ``zsclip.store.embed``, which compares each file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..encoders.base import Encoder
from ..job import LabelledData, features
from ..options import RunOptions
from ..store import COMMIT_EVERY, EmbeddingStore
from ..store.embed import EmbedReport

#: The error of a sample whose shard changed while it was read (its facts would not match its bytes).
SHARD_CHANGED = "its shard changed while it was read: embed again"


def _shard_facts(shard: str) -> tuple[int, int] | None:
    try:
        info = os.stat(shard)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def embed_shards(store: EmbeddingStore, source: LabelledData, encoder: Encoder, options: RunOptions | None = None,
                 *, commit_every: int = COMMIT_EVERY, on_progress: Callable[[int], None] | None = None,
                 ray=None) -> EmbedReport:
    """Add the samples of the shards of ``source`` (unchanged shards skipped) to ``store``."""
    options = options or RunOptions()
    store.check_encoder(encoder)
    report = EmbedReport()
    with store.writing():
        known = store.facts()
        stored_shards: dict[str, set] = {}  # shard -> the facts its completed commits recorded
        for key, facts in known.items():
            if "#" in key and facts[0] is not None:
                stored_shards.setdefault(key.rsplit("#", 1)[0], set()).add(facts)
        for shard in source.collection.shards:
            resolved = os.path.realpath(shard)
            before = _shard_facts(shard)
            if before is not None and before in stored_shards.get(resolved, ()):
                report.skipped += 1  # one unchanged shard, all of its samples stored
                continue
            one = LabelledData(replace(source.collection, shards=[shard]), labelled=source.labelled)
            pending: list[tuple[dict, np.ndarray | None]] = []
            for batch in features(one, encoder, options, ray):
                good = iter(np.asarray(batch.features, dtype=np.float32))
                targets = batch.targets or [-1] * len(batch.ids)
                for name, error, target in zip(batch.ids, batch.errors, targets, strict=True):
                    key = name.rsplit("#", 1)[-1]
                    row = {"path": name, "resolved": f"{resolved}#{key}", "deleted": False,
                           "label": target if target >= 0 else None, "error": error}
                    pending.append((row, next(good) if error is None else None))
                if on_progress:
                    on_progress(len(batch.ids))
            after = _shard_facts(shard)
            for row, _ in pending:
                if after != before:  # the facts must describe the bytes that were encoded
                    row["error"] = row["error"] or SHARD_CHANGED
                report.encoded += row["error"] is None
                report.failed += row["error"] is not None
            # committed shard by shard; only the last commit of a shard carries its facts, so a run
            # killed inside a shard embeds that shard again instead of skipping its missing samples
            chunks = [pending[i : i + commit_every] for i in range(0, len(pending), commit_every)]
            for number, chunk in enumerate(chunks, start=1):
                for row, _ in chunk:
                    if number == len(chunks) and after == before and after is not None:
                        row["size"], row["mtime_ns"] = after
                store.append([row for row, _ in chunk],
                             [None if row["error"] else vector for row, vector in chunk])
                report.shards += 1
    return report


__all__ = ["embed_shards", "SHARD_CHANGED"]
