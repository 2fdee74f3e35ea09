"""``zsclip dedup``: near-duplicate images in a store, by the cosine similarity of their stored embeddings.

Every row of the view is a query; its neighbours come from the store's index (candidates rescored exactly;
without an index every row is scored, which is quadratic: fine for thousands of rows, `zsclip index` first
for more). Rows at or above the threshold are joined (union-find), so a group is every row reachable through
such pairs. Each group keeps one representative: the largest image (width x height recorded when embedded),
the earliest row (store order) among equals, i.e. the copy first added. The others are written with their
representative and their similarity to it (which may be below the threshold for a row joined through another).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: neighbours looked at per row: a group larger than this still joins, through its members' own neighbours
NEIGHBOURS = 16
QUERY_BATCH = 1024
COLUMNS = ("group", "path", "representative", "similarity")


@dataclass
class Duplicate:
    """A row that duplicates its group's representative (``similarity``: their cosine)."""

    group: int
    path: str
    representative: str
    similarity: float


@dataclass
class DedupReport:
    rows: int
    groups: int
    duplicates: list[Duplicate] = field(default_factory=list)
    seconds: float = 0.0
    indexed: bool = False


class _Sets:
    """Union-find over row positions (path halving; the smaller root joins the larger's)."""

    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, item):
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def join(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicates(path: str | os.PathLike, threshold: float = 0.95, *, output: str | os.PathLike | None = None,
                    neighbours: int = NEIGHBOURS) -> DedupReport:
    """Groups of near-duplicate rows of the store at ``path`` (cosine >= ``threshold``), one representative
    each; the other rows (``Duplicate``) are returned and, with ``output`` (.csv), written there."""
    from ..outputs.atomic import check_writable
    from ..store import EmbeddingStore
    from ..store.index import StoreIndex, has_index, shard_vectors

    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: a cosine similarity, -1 to 1 (e.g. 0.95)")
    if not 1 <= neighbours <= 1000:
        raise InputError(f"--neighbours {neighbours}: 1 to 1000")
    if output is not None:
        if not os.fspath(output).lower().endswith(".csv"):
            raise InputError(f"--output {os.fspath(output)}: dedup writes a .csv file")
        check_writable(output)
    started = time.perf_counter()
    store = EmbeddingStore.open(path)
    index = (StoreIndex.open(store) if has_index(store) else None) or StoreIndex(store, [], [])
    order = {shard["file"]: n for n, shard in enumerate(store.manifest["shards"])}
    sets, similar = _Sets(), {}
    rows = 0
    for positions, vectors in _rows(index, shard_vectors):
        rows += len(positions)
        for start in range(0, len(positions), QUERY_BATCH):
            found = index.search(vectors[start:start + QUERY_BATCH], neighbours + 1)
            for me, hits in zip(positions[start:start + QUERY_BATCH], found, strict=True):
                mine = (order[me[0]], me[1])
                for shard, row, score in hits:
                    other = (order[shard], row)
                    if other != mine and score >= threshold:
                        sets.join(mine, other)
                        key = (min(mine, other), max(mine, other))
                        similar[key] = max(similar.get(key, -1.0), score)
    report = DedupReport(rows, 0, indexed=bool(index.parts))
    report.duplicates = _grouped(store, sets, similar, report)
    report.seconds = time.perf_counter() - started
    if output is not None:
        _write(output, report.duplicates)
    return report


def _rows(index, shard_vectors):
    """(positions [(shard, row)], float32 vectors) of every row the index answers from, part by part."""
    for loaded, alive in zip(index.parts, index.alive, strict=True):
        at = np.flatnonzero(alive)
        for start in range(0, len(at), 65536):
            chunk = at[start:start + 65536]
            yield [loaded.position(i) for i in chunk], np.asarray(loaded.vectors[chunk], dtype=np.float32)
    for shard, rows, vectors in shard_vectors(index.store, index.uncovered, index.masks):
        yield [(shard, int(row)) for row in rows], vectors


def _grouped(store, sets: _Sets, similar: dict, report: DedupReport) -> list[Duplicate]:
    from ..store.rows import describe_rows

    names = [shard["file"] for shard in store.manifest["shards"]]
    members: dict = {}
    for item in list(sets.parent):
        members.setdefault(sets.find(item), []).append(item)
    groups = [sorted(group) for group in members.values() if len(group) > 1]
    facts = describe_rows(store, [(names[s], r) for group in groups for s, r in group])
    vectors = _vectors(store, [item for group in groups for item in group], names)
    out: list[Duplicate] = []
    for number, group in enumerate(sorted(groups), start=1):
        def size(item):
            fact = facts[(names[item[0]], item[1])]
            return (fact["width"] or 0) * (fact["height"] or 0)
        keeper = min(group, key=lambda item: (-size(item), item))
        for item in group:
            if item == keeper:
                continue
            score = float(vectors[item] @ vectors[keeper])
            out.append(Duplicate(number, facts[(names[item[0]], item[1])]["path"],
                                 facts[(names[keeper[0]], keeper[1])]["path"], round(score, 6)))
    report.groups = len(groups)
    return out


def _vectors(store, items: list[tuple[int, int]], names: list[str]) -> dict:
    """The stored (checked, float32) embedding of each row in ``items`` (few: the grouped rows)."""
    from ..store.index import read_shards

    wanted: dict[str, set[int]] = {}
    for s, r in items:
        wanted.setdefault(names[s], set()).add(r)
    out = {}
    masks = {}
    for name, rows in wanted.items():
        count = next(int(shard["rows"]) for shard in store.manifest["shards"] if shard["file"] == name)
        mask = np.zeros(count, dtype=bool)
        mask[[r for r in rows if r < count]] = True
        masks[name] = mask
    for name, rows, vectors in read_shards(store.location, list(wanted), masks, store.embed_dim):
        for row, vector in zip(rows.tolist(), vectors, strict=True):
            out[(names.index(name), row)] = vector
    return out


def _write(output, duplicates: list[Duplicate]) -> None:
    from ..outputs.atomic import AtomicFile

    target = AtomicFile(output, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(target.file)
        writer.writerow(COLUMNS)
        for dup in duplicates:
            writer.writerow([dup.group, dup.path, dup.representative, f"{dup.similarity:.6f}"])
    except BaseException:
        target.discard()
        raise
    target.commit()


__all__ = ["DedupReport", "Duplicate", "find_duplicates"]
