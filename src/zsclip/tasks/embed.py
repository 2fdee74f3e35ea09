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


# --- videos (and the photos beside them) ---------------------------------------------------------------

#: How a video clip's row is known in a store: ``<resolved video path>#t=<start>-<end>``.
SPAN_KEY = "#t="
FILE_CHANGED = "the file changed while it was being embedded (written to during the run?): run `zsclip embed` again"


def clip_key(resolved: str, span: tuple[float, float] | None) -> str:
    return resolved if span is None else f"{resolved}{SPAN_KEY}{span[0]:.3f}-{span[1]:.3f}"


def embed_media(store: EmbeddingStore, source, encoder: Encoder, options: RunOptions | None = None, *,
                commit_every: int = COMMIT_EVERY, on_progress: Callable[[int], None] | None = None,
                ray=None, reembed: bool = False) -> EmbedReport:
    """Add photos and videos (``MediaFiles``) to ``store``: a row per photo and per video clip (the whole
    video, or each ``--segment``), clip rows with ``start`` / ``end`` seconds. A video whose stored
    clips all carry its current size and modification time is skipped; one embedded again replaces
    its old clips (those of another sampling get ``deleted`` rows); a file that is gone is dropped.

    The store records the sampling (frames, segment, max frames) of its clips: other settings are
    refused (``StoreError``), as unchanged videos would keep the old clips beside new files' new ones,
    unless ``reembed``, which embeds every video again with the new settings (marked unfinished in the
    manifest until done, so an interrupted re-embed is not mistaken for a finished one)."""
    from ..data.video import NOTE, Sampling, is_note, is_video_name
    from ..job import MediaFiles

    options = options or RunOptions()
    sampling = Sampling(options.frames, options.segment, options.max_video_frames).record()
    store.check_encoder(encoder)
    report = EmbedReport()
    with store.writing():
        store.check_video_sampling(sampling, reembed)  # against the manifest as re-read under the lock
        known = store.facts()
        by_file: dict[str, dict[str, tuple]] = {}
        for key, facts in known.items():
            by_file.setdefault(key.split(SPAN_KEY, 1)[0], {})[key] = facts
        if reembed:
            _check_all_videos_given(store, source, by_file)
        if reembed or store.video_sampling is None:
            store.record_video_sampling(sampling, unfinished=reembed)
        todo, facts_before, resolved_of = [], {}, {}
        for item in source.items:
            resolved = os.path.realpath(item.name) if item.error is None else item.name
            stat = _file_facts(item.name)
            stored = by_file.get(resolved, {})
            again = reembed and is_video_name(item.name)
            if (item.error is None and stored and stat is not None and all(f == stat for f in stored.values())
                    and not again):
                report.skipped += 1
                continue
            todo.append(item)
            facts_before[item.name], resolved_of[item.name] = stat, resolved
        pending: list[tuple[dict, np.ndarray | None]] = []
        written: dict[str, set[str]] = {}

        def commit() -> None:
            if pending:
                store.append([row for row, _ in pending], [vector for _, vector in pending])
                report.shards += 1
                pending.clear()

        if todo:
            part = MediaFiles(todo, source.classnames)
            for batch in features(part, encoder, options, ray):
                good = iter(np.asarray(batch.features, dtype=np.float32))
                targets = batch.targets or [-1] * len(batch.ids)
                spans = batch.spans or [None] * len(batch.ids)
                for name, error, target, span in zip(batch.ids, batch.errors, targets, spans, strict=True):
                    if is_note(error):  # a video cut short: its clips stand; the note is reported, not stored
                        report.notes.append((name, error[len(NOTE):]))
                        continue
                    vector = next(good) if error is None else None
                    resolved = resolved_of[name]
                    after = _file_facts(name)
                    if error is None and after != facts_before[name]:
                        error, vector = FILE_CHANGED, None
                    key = clip_key(resolved, span)
                    written.setdefault(resolved, set()).add(key)
                    row = {"path": name, "resolved": key, "deleted": False, "error": error,
                           "label": target if target >= 0 else None,
                           "start": span[0] if span else None, "end": span[1] if span else None}
                    if error is None and after is not None:
                        row["size"], row["mtime_ns"] = after
                    report.encoded += error is None
                    report.failed += error is not None
                    pending.append((row, vector))
                    if len(pending) >= commit_every:
                        commit()
                if on_progress:
                    on_progress(len(set(batch.ids)))
        wanted = {os.path.realpath(item.name) for item in source.items if item.error is None}
        for resolved, stored in by_file.items():
            gone = resolved not in wanted and not os.path.lexists(resolved)
            stale = resolved in written
            for key in stored:
                if gone or (stale and key not in written[resolved]):
                    pending.append(({"path": key, "resolved": key, "deleted": True}, None))
                    report.deleted += gone
        commit()
        if reembed:
            store.record_video_sampling(sampling)
    return report


def _check_all_videos_given(store: EmbeddingStore, source, by_file: dict[str, dict]) -> None:
    """``--reembed`` replaces every clip of the store: refuse it when stored videos that still exist are not
    among the inputs (their old clips would stay under the new settings)."""
    from ..store.format import StoreError

    given = {os.path.realpath(item.name) for item in source.items if item.error is None}
    missing = [name for name, keys in by_file.items() if name not in given and os.path.lexists(name)
               and any(SPAN_KEY in key for key in keys)]
    if missing:
        raise StoreError(f"--reembed embeds the store's videos again, and {len(missing)} of them are not among the "
                         f"inputs (e.g. {missing[0]}): give every video of store {store.folder}, or embed into a new "
                         "store path")


def _file_facts(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size, info.st_mtime_ns


# --- Hugging Face Parquet / Arrow splits ---------------------------------------------------------------

def embed_table(store: EmbeddingStore, source, encoder: Encoder, options: RunOptions | None = None, *,
                commit_every: int = COMMIT_EVERY, on_progress: Callable[[int], None] | None = None,
                ray=None) -> EmbedReport:
    """Add the rows of a Hugging Face split (``HFTableSource``) to ``store``, one file at a time: a row
    is known by ``<resolved file>#<row>``; a file whose stored rows carry its current facts is skipped."""
    from ..job import HFTableSource

    options = options or RunOptions()
    store.check_encoder(encoder)
    report = EmbedReport()
    table = source.table
    with store.writing():
        stored: dict[str, set] = {}
        for key, facts in store.facts().items():
            if "#" in key and facts[0] is not None:
                stored.setdefault(key.rsplit("#", 1)[0], set()).add(facts)
        for index, file in enumerate(table.files):
            resolved = os.path.realpath(file)
            before = _file_facts(str(file))
            if before is not None and stored.get(resolved) == {before}:
                report.skipped += 1
                continue
            one = replace(table, files=[file], parts=[(0, groups, first) for i, groups, first in table.parts
                                                      if i == index])
            part = HFTableSource(one, labelled=source.labelled)
            rows: list[tuple[dict, np.ndarray | None]] = []
            for batch in features(part, encoder, options, ray):
                good = iter(np.asarray(batch.features, dtype=np.float32))
                targets = batch.targets or [-1] * len(batch.ids)
                for name, error, target in zip(batch.ids, batch.errors, targets, strict=True):
                    rows.append(({"path": name, "resolved": f"{resolved}#{name.rsplit('#', 1)[-1]}",
                                  "deleted": False, "label": target if target >= 0 else None, "error": error},
                                 next(good) if error is None else None))
                if on_progress:
                    on_progress(len(batch.ids))
            after = _file_facts(str(file))
            chunks = [rows[i : i + commit_every] for i in range(0, len(rows), commit_every)]
            for number, chunk in enumerate(chunks, start=1):
                for row, _ in chunk:
                    if after != before:
                        row["error"] = row["error"] or SHARD_CHANGED
                    elif number == len(chunks) and after is not None:
                        row["size"], row["mtime_ns"] = after  # the last commit of a file carries its facts
                store.append([row for row, _ in chunk], [None if row["error"] else vector for row, vector in chunk])
                report.shards += 1
            for row, _ in rows:
                report.encoded += row["error"] is None
                report.failed += row["error"] is not None
    return report


__all__ = ["embed_shards", "embed_media", "embed_table", "clip_key", "SHARD_CHANGED"]
