"""Stored rows by position: (shard, row within shard) -> what a result names (path, identity, clip span, size).

The index and dedup keep positions, not paths (a path list is O(rows) memory); this is the one place
positions become paths, reading only the shards asked about. A reader that keeps per-shard paths
elsewhere (a path cache, a compacted layout) replaces this function and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

#: the columns a row's description is read from (start/end only where the shard has video clips)
ROW_COLUMNS = ("path", "resolved", "error", "width", "height")


def describe_rows(store, positions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    """(shard file, row) -> {"path", "resolved", "error", "width", "height", "start", "end"} for each position
    asked, reading each shard named once (its small columns only, never the embeddings, and only the row groups
    holding asked rows). A row whose path is missing (damage) is named ``<shard row N>``, as the store's reader
    names it."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for shard, row in positions:
        wanted[shard].add(int(row))
    out: dict[tuple[str, int], dict] = {}
    for shard, rows in wanted.items():
        reader = store.location.parquet_file(shard)
        spans = [c for c in ("start", "end") if c in reader.schema_arrow.names]
        sizes = [reader.metadata.row_group(g).num_rows for g in range(reader.metadata.num_row_groups)]
        starts = np.cumsum([0, *sizes])
        order = np.array(sorted(rows), dtype=np.int64)
        order = order[(order >= 0) & (order < starts[-1])]
        # only the row groups holding asked rows (a search of a 10 M-row store names 10 rows in up to 10 shards
        # of 100,000: reading their whole path columns was most of a query's time)
        group_of = np.searchsorted(starts, order, side="right") - 1
        groups = sorted(set(group_of.tolist()))
        table = reader.read_row_groups(groups, columns=[*ROW_COLUMNS, *spans], use_threads=False)
        offset_of = dict(zip(groups, np.cumsum([0] + [sizes[g] for g in groups]).tolist(), strict=False))
        local = [offset_of[int(g)] + int(row - starts[g]) for g, row in zip(group_of, order, strict=True)]
        picked = table.take(np.array(local, dtype=np.int64)).to_pydict()
        for i, row in enumerate(order.tolist()):
            path = picked["path"][i]
            resolved = picked["resolved"][i]
            named = path if path is not None else resolved if resolved is not None else f"<{shard} row {row}>"
            out[(shard, row)] = {
                "path": named, "resolved": resolved if resolved is not None else named, "error": picked["error"][i],
                "width": picked["width"][i], "height": picked["height"][i],
                "start": picked["start"][i] if spans else None, "end": picked["end"][i] if spans else None}
    return out


def failed_rows(store, masks: dict[str, np.ndarray]) -> list[dict]:
    """``{"path", "error"}`` per row of the view recorded with an error (an image that could not be read when
    embedded), in store order: what an exact search reports beside its results. Reads the error column."""
    out: list[dict] = []
    for shard in store.manifest["shards"]:
        mask = masks.get(shard["file"])
        if mask is None or not mask.any():
            continue
        errors = store.location.read_table(shard["file"], ["error"]).column("error")
        failed = np.flatnonzero(errors.is_valid().to_numpy(zero_copy_only=False)[: len(mask)] & mask[: len(errors)])
        if len(failed):
            named = describe_rows(store, [(shard["file"], int(row)) for row in failed])
            out.extend({"path": named[(shard["file"], int(row))]["path"],
                        "error": named[(shard["file"], int(row))]["error"]} for row in failed)
    return out


__all__ = ["describe_rows", "failed_rows"]
