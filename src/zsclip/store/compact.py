"""``compact``: rewrite a store's shards without the rows that left its view, atomically and resumably.

A store only ever appends (format.py): a changed file gets a new row, a vanished one a ``deleted``
row, and the old rows stay in their shards. Compaction keeps exactly the view (the rows ``batches``
yields, damaged and failed rows included, in the same order), so every answer read from the store is
the same before and after; only the disk and the work of computing the view shrink.

The commit protocol is the store's own:

1. under the store's write lock (a running writer makes compaction refuse in one line; a writer
   that comes while it runs waits or is refused), what a killed writer or compaction left is removed;
2. every shard with rows to drop is rewritten, streamed record batch by record batch, into a new
   shard with a new unique name (a shard is never rewritten in place: an index or a reader keyed by
   shard name never sees other rows under a name it knows); each is synced, then the folder;
3. one manifest replace commits the new list (rewritten shards in the place of the old ones, the
   untouched shards as they were, every one marked ``new_paths``), synced before and after;
4. only then are the old shards deleted.

A kill before 3 leaves the old manifest and some unlisted new shards (removed by the next run,
which starts over); a kill between 3 and 4 leaves the new store and unlisted old shards (removed
by the next run, which finds nothing left to drop). Readers therefore see the old store or the new
one. A reader that opened the old manifest and opens one of its shards only after step 4 finds it
gone (it is reported and skipped, as a damaged shard is): run compaction when no long read is under
way, as with any writer. Object stores have no lock: there, run it only when nothing else writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .format import StoreError, shard_write_options
from .store import ROW_GROUP_ROWS, EmbeddingStore, ShardError

#: Rows read at a time from a shard being rewritten (one record batch in memory).
READ_BATCH_ROWS = 8192


@dataclass
class CompactReport:
    """What one ``compact`` run did (``bytes_*``: the listed shards' sizes on disk)."""

    kept: int = 0
    dropped: int = 0
    shards_before: int = 0
    shards_after: int = 0
    rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    #: files a killed earlier run (or writer) left, removed first
    leftovers: int = 0
    #: shards that could not be read: kept listed as they are (their rows are not in the view either)
    unreadable: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.rewritten > 0 or self.dropped > 0


def compact(store: EmbeddingStore, *, on_shard=None) -> CompactReport:
    """Rewrite ``store``'s shards without the rows that are not in its view (see the module docstring).

    ``on_shard(name)`` is called after each new shard is written (progress)."""
    report = CompactReport()
    with store._locked(0.0):  # refuses at once while another run writes; re-reads the manifest
        report.leftovers = len(store.remove_leftovers())
        shards = [dict(shard) for shard in store.manifest["shards"]]
        masks = store.view_masks()
        report.shards_before = len(shards)
        report.bytes_before = sum(store.location.size(shard["file"]) for shard in shards)
        listed: list[dict] = []
        written: list[str] = []
        replaced: list[str] = []
        try:
            for index, shard in enumerate(shards):
                mask = masks.get(index)
                if mask is None:
                    report.unreadable.append(shard["file"])
                    listed.append(shard)
                    continue
                kept = int(mask.sum())
                report.kept += kept
                report.dropped += len(mask) - kept
                if kept == len(mask):
                    listed.append({**shard, "new_paths": True})  # nothing to drop: kept as it is
                    continue
                replaced.append(shard["file"])
                if kept == 0:
                    continue
                name = _new_name(len(listed))
                written.append(name)
                try:
                    schema, batches = _live_batches(store, shard["file"], mask)
                    rows = store.location.write_batches(name, schema, batches, row_group_size=ROW_GROUP_ROWS,
                                                        **shard_write_options(schema))
                except (OSError, pa.ArrowException, ShardError) as error:
                    raise StoreError(f"store shard {shard['file']} cannot be rewritten ({error}): the store is "
                                     "unchanged; fix the cause and run `zsclip compact` again") from None
                listed.append({"file": name, "rows": rows, "new_paths": True})
                report.rewritten += 1
                if on_shard is not None:
                    on_shard(name)
            if not report.changed and all(shard.get("new_paths") for shard in shards if shard["file"] not in
                                          report.unreadable):
                report.shards_after, report.bytes_after = report.shards_before, report.bytes_before
                return report  # nothing to drop and every shard already marked: nothing to write
            store.manifest["shards"] = listed
            store.manifest["compacted"] = _now()
            store._masks = None
            store._write_manifest()  # the commit point
        except BaseException:
            store.manifest["shards"] = shards
            store._masks = None
            for name in written:
                store.location.delete(name)
            raise
        for name in replaced:  # no longer listed: nobody opening the store now reads them
            store.location.delete(name)
        report.shards_after = len(listed)
        report.bytes_after = sum(store.location.size(shard["file"]) for shard in listed)
    return report


def _live_batches(store: EmbeddingStore, name: str, mask: np.ndarray) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(the shard's own schema, its rows that ``mask`` keeps, batch by batch): every column as it is
    stored, optional ones (video spans) included."""
    reader = store.location.parquet_file(name)
    schema = reader.schema_arrow
    store._check_shard(name, schema)
    if reader.metadata.num_rows != len(mask):
        raise ShardError(f"it has {reader.metadata.num_rows} rows, the view was computed for {len(mask)}")

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for record in reader.iter_batches(batch_size=READ_BATCH_ROWS, use_threads=False):
            keep = np.flatnonzero(mask[offset : offset + record.num_rows])
            offset += record.num_rows
            if len(keep):
                yield record.take(pa.array(keep, type=pa.int64()))

    return schema, batches()


def _new_name(position: int) -> str:
    """A shard name never used before in this store (the uuid), numbered by its place in the list."""
    return f"shard-{position:05d}-{uuid.uuid4().hex[:8]}.parquet"


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["CompactReport", "compact"]
