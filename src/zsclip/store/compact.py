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

``pack=True`` also rewrites every shard that holds its embeddings as lists (a store made before format 3)
with packed embeddings (format.py), under the same protocol, and makes the store format 3: three times
faster to read, and no longer readable by a zsclip older than format 3 (it refuses it in one line).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .format import (
    LAYOUT_FIELD,
    PACKED,
    PACKED_DTYPES,
    StoreError,
    embedding_type,
    shard_write_options,
    written_version,
)
from .store import ROW_GROUP_ROWS, EmbeddingStore, ShardError, _nulls, packed_column

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
    #: shards rewritten with packed embeddings (``pack=True``), and whether the store became format 3 here
    packed: int = 0
    became_packed: bool = False

    @property
    def changed(self) -> bool:
        return self.rewritten > 0 or self.dropped > 0 or self.became_packed


def compact(store: EmbeddingStore, *, pack: bool = False, on_shard=None) -> CompactReport:
    """Rewrite ``store``'s shards without the rows that are not in its view (see the module docstring);
    ``pack``: with packed embeddings too, every shard that has lists.

    ``on_shard(name)`` is called after each new shard is written (progress)."""
    report = CompactReport()
    with store._locked(0.0):  # refuses at once while another run writes; re-reads the manifest
        report.leftovers = len(store.remove_leftovers())
        before = dict(store.manifest)  # put back as it was if anything below fails
        report.became_packed = pack and not store.packed
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
                packing = pack and kept > 0 and not _packed_shard(store, shard["file"])
                if kept == len(mask) and not packing:
                    listed.append({**shard, "new_paths": True})  # nothing to drop: kept as it is
                    continue
                replaced.append(shard["file"])
                if kept == 0:
                    continue
                name = _new_name(len(listed))
                written.append(name)
                try:
                    schema, batches = _live_batches(store, shard["file"], mask, packing)
                    rows = store.location.write_batches(name, schema, batches, row_group_size=ROW_GROUP_ROWS,
                                                        **shard_write_options(schema))
                except (OSError, pa.ArrowException, ShardError) as error:
                    raise StoreError(f"store shard {shard['file']} cannot be rewritten ({error}): the store is "
                                     "unchanged; fix the cause and run `zsclip compact` again") from None
                listed.append({"file": name, "rows": rows, "new_paths": True})
                report.rewritten += 1
                report.packed += packing
                if on_shard is not None:
                    on_shard(name)
            if not report.changed and all(shard.get("new_paths") for shard in shards if shard["file"] not in
                                          report.unreadable):
                report.shards_after, report.bytes_after = report.shards_before, report.bytes_before
                return report  # nothing to drop and every shard already marked: nothing to write
            store.manifest["shards"] = listed
            store.manifest["compacted"] = _now()
            if report.became_packed:
                store.manifest.update({LAYOUT_FIELD: PACKED, "version": written_version(store.multi_label, True)})
            store._masks = None
            store._write_manifest()  # the commit point
        except BaseException:
            store.manifest = before
            store._masks = None
            for name in written:
                store.location.delete(name)
            raise
        for name in replaced:  # no longer listed: nobody opening the store now reads them
            store.location.delete(name)
        report.shards_after = len(listed)
        report.bytes_after = sum(store.location.size(shard["file"]) for shard in listed)
    return report


def _live_batches(store: EmbeddingStore, name: str, mask: np.ndarray,
                  pack: bool = False) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(the shard's own schema, its rows that ``mask`` keeps, batch by batch): every column as it is
    stored, optional ones (video spans) included; ``pack``: the embedding column packed."""
    reader = store.location.parquet_file(name)
    schema = reader.schema_arrow
    store._check_shard(name, schema)
    if reader.metadata.num_rows != len(mask):
        raise ShardError(f"it has {reader.metadata.num_rows} rows, the view was computed for {len(mask)}")
    index = schema.get_field_index("embedding")
    written = schema.set(index, pa.field("embedding", embedding_type(store.embed_dim, store.dtype, True))) \
        if pack else schema

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for record in reader.iter_batches(batch_size=READ_BATCH_ROWS, use_threads=False):
            keep = np.flatnonzero(mask[offset : offset + record.num_rows])
            if len(keep):
                taken = record.take(pa.array(keep, type=pa.int64()))
                if pack:
                    columns = list(taken.columns)
                    columns[index] = _packed_column(columns[index], store.embed_dim, store.dtype,
                                                    lambda i, keep=keep, offset=offset: offset + int(keep[i]))
                    taken = pa.RecordBatch.from_arrays(columns, schema=written)
                yield taken
            offset += record.num_rows

    return written, batches()


def _packed_shard(store: EmbeddingStore, name: str) -> bool:
    """Whether the shard's embedding column is packed already (its footer says: nothing else is read)."""
    try:
        return pa.types.is_fixed_size_binary(store.location.parquet_file(name).schema_arrow.field("embedding").type)
    except (OSError, pa.ArrowException, KeyError):
        return False  # read (and reported) by the rewrite that follows


def _packed_column(column: pa.Array, dim: int, dtype: str, row_of) -> pa.FixedSizeBinaryArray:
    """A list embedding column as packed values: a null row stays null, a null value becomes NaN (what a reader
    of the list makes of it: an error row either way); a row of another length cannot be packed (ShardError)."""
    missing = _nulls(column)
    if not pa.types.is_fixed_size_list(column.type):
        lengths = np.asarray(pc.list_value_length(column).fill_null(dim), dtype=np.int64)
        wrong = np.flatnonzero(lengths != dim)
        if len(wrong):
            raise ShardError(f"row {row_of(int(wrong[0]))} has {int(lengths[wrong[0]])} values, the store's width is "
                             f"{dim}: it cannot be packed")
    values = np.zeros((len(column), dim), dtype=PACKED_DTYPES[dtype])
    present = column.filter(pa.array(~missing)) if missing.any() else column
    if len(present):
        values[~missing] = present.flatten().to_numpy(zero_copy_only=False).reshape(len(present), dim)
    return packed_column(values, dim, PACKED_DTYPES[dtype], missing)


def _new_name(position: int) -> str:
    """A shard name never used before in this store (the uuid), numbered by its place in the list."""
    return f"shard-{position:05d}-{uuid.uuid4().hex[:8]}.parquet"


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["CompactReport", "compact"]
