"""The store's ANN index: FAISS inverted lists over the stored embeddings, candidates rescored exactly.

    photos.zse/
      zsclip-index.json              the sidecar: library, parameters, and per part the shards it covers
      index-<id>.faiss               a part's FAISS index (IVF lists with 8-bit codes, or flat when small)
      index-<id>.ids.npy             per indexed row: (shard position in the part << 32) | row in the shard
      index-<id>.vectors.npy         the indexed rows' stored embeddings (the store's dtype): exact rescoring

Why FAISS IVF (benchmarks/bench_index.py, docs/round4-index.md): on this project's 2-core machines an HNSW
graph (usearch or FAISS) builds at ~600-750 rows/s at 512-d, an IVF index at ~4,000 rows/s, with the same
recall@10 after rescoring; IVF also extends by adding rows to trained lists. usearch and FAISS crash when
loaded into one process, so zsclip uses one library.

A part covers a group of whole shards (shards are immutable once listed; a compaction writes new ones), so
the index is keyed by shard name + row, and ``build`` extends it by comparing the manifest's shards with the
parts' shards: new shards get new parts, parts naming shards the manifest no longer lists are rebuilt.
Rows are indexed as they are in the view when built; at search time every candidate is checked against the
current view (``view_masks``), so a row deleted or superseded since is never returned, and its part asks for
that many more candidates. Shards no part covers yet (an embed since the last ``zsclip index``) are searched
exactly, so a search is always complete. Candidates are rescored with the stored embeddings (float32 dot
products, as exact search computes them): the index only chooses which rows are scored.

Nothing here is a pickle: FAISS's own format and .npy read with ``allow_pickle=False``. Every file is written
under a temporary name and renamed; the sidecar, written last, is the commit point. A sidecar or part that
does not check out is refused with one warning line (the search falls back to exact for those shards).
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import InputError, ZsclipWarning

INDEX_FILE = "zsclip-index.json"
FORMAT = "zsclip-index"
VERSION = 1
#: rows per part: the unit built (and on Ray, built and searched) at once
PART_ROWS = 1_000_000
#: parts smaller than this are flat (every row scored): inverted lists gain nothing on so few rows
FLAT_BELOW = 50_000
#: candidates per query: max(k * OVERSAMPLE, MIN_CANDIDATES), plus a part's rows that left the view
OVERSAMPLE = 4
MIN_CANDIDATES = 100
#: k-means trains on at most this many rows per list (FAISS's sampling)
TRAIN_PER_LIST = 64
#: a part whose indexed rows have left the view beyond this share is rebuilt by ``zsclip index``
STALE_SHARE = 0.25
SUFFIXES = (".faiss", ".ids.npy", ".vectors.npy")
ROW_BITS = 32


def auto_lists(rows: int) -> int:
    """Inverted lists for a part of ``rows`` rows: 0 (flat) below ``FLAT_BELOW``, else about sqrt(rows)."""
    return 0 if rows < FLAT_BELOW else int(min(65536, max(16, round(np.sqrt(rows)))))


def auto_probes(lists: int) -> int:
    """Lists scanned per query: 1/128 of them, at least 8 (1 M clustered rows, 1,000 lists: recall@10 0.9986
    after rescoring at 20x exact search's queries/s; 31 probes: 0.9996 at 10x; docs/round4-index.md)."""
    return 0 if lists == 0 else min(lists, max(8, lists // 128))


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("the ANN index needs FAISS: pip install 'zsclip[index]' (or search with --exact)") from None
    return faiss


# --- the arrays: build and search one part ------------------------------------------------------------------
def train(vectors: np.ndarray, lists: int, threads: int | None = None):
    """A FAISS index over float32 unit ``vectors`` [n, D] (inner product = cosine): flat when ``lists`` is 0,
    else ``lists`` inverted lists with 8-bit scalar codes, k-means trained on a sample."""
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    dim = vectors.shape[1]
    if lists == 0:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.min_points_per_centroid = 1  # small parts (tests, --lists) train without FAISS's stderr warning
        ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
        ivf.cp.seed = 1234
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    for start in range(0, len(vectors), 65536):
        index.add(np.ascontiguousarray(vectors[start:start + 65536], dtype=np.float32))
    return index


def candidates(index, queries: np.ndarray, count: int, probes: int) -> np.ndarray:
    """The ``count`` approximate nearest positions per query (-1 where there are fewer), [m, count]."""
    faiss = _faiss()
    count = max(1, min(count, index.ntotal))
    params = faiss.SearchParametersIVF(nprobe=max(1, probes)) if probes else None
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), count, params=params)
    return found


def rescored(found: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int,
             alive: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions [m, k], exact scores [m, k]) per query: the candidates ``found`` that are ``alive`` (in the
    view), scored with the stored ``vectors`` in float32, best first (equal scores: lower position first);
    -1 / -inf pad a query with fewer. All queries at once: one gather, one batched dot product."""
    m = len(queries)
    valid = found >= 0
    safe = np.where(valid, found, 0)
    if alive is not None:
        valid &= alive[safe]
    named = np.where(found >= 0, found, -1 - np.arange(found.shape[1]))  # each padding slot its own key
    by_position = np.argsort(named, axis=1, kind="stable")  # a position named twice is scored once
    repeated = np.zeros_like(valid)
    sorted_positions = np.take_along_axis(named, by_position, axis=1)
    np.put_along_axis(repeated, by_position[:, 1:], sorted_positions[:, 1:] == sorted_positions[:, :-1], axis=1)
    valid &= ~repeated
    order = np.argsort(safe, axis=None)  # gather in file order: sequential reads of a memory map
    gathered = np.empty((safe.size, vectors.shape[1]), dtype=np.float32)
    gathered[order] = np.asarray(vectors[safe.reshape(-1)[order]], dtype=np.float32)
    exact = np.einsum("mcd,md->mc", gathered.reshape(*safe.shape, -1), np.asarray(queries, dtype=np.float32))
    exact = np.where(valid, exact, -np.inf).astype(np.float32)
    ranked = np.lexsort((np.where(valid, safe, np.iinfo(np.int64).max), -exact), axis=-1)[:, :k]
    positions = np.full((m, k), -1, dtype=np.int64)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    take = ranked.shape[1]
    picked = np.take_along_axis(valid, ranked, axis=-1)
    positions[:, :take] = np.where(picked, np.take_along_axis(safe, ranked, axis=-1), -1)
    scores[:, :take] = np.where(picked, np.take_along_axis(exact, ranked, axis=-1), -np.inf)
    return positions, scores


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions [m, k], scores [m, k]) of the ``k`` best of all ``vectors`` per query: one float32 matmul."""
    m = len(queries)
    positions = np.full((m, k), -1, dtype=np.int64)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    if not len(vectors):
        return positions, scores
    every = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    take = min(k, every.shape[1])
    part = np.argpartition(-every, take - 1, axis=1)[:, :take] if take < every.shape[1] else \
        np.broadcast_to(np.arange(take), (m, take))
    picked = np.take_along_axis(every, part, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    positions[:, :take] = np.take_along_axis(part, order, axis=1)
    scores[:, :take] = np.take_along_axis(picked, order, axis=1)
    return positions, scores


# --- the sidecar ------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One part as the sidecar lists it: the shards it covers (in order), its files' stem and sizes, and how
    it was built (``lists`` 0 = flat; ``probes`` lists scanned per query)."""

    stem: str
    shards: list[str]
    rows: int
    lists: int
    probes: int
    sizes: dict[str, int] = field(default_factory=dict)

    def file(self, suffix: str) -> str:
        return self.stem + suffix

    def record(self) -> dict:
        return {"stem": self.stem, "shards": self.shards, "rows": self.rows, "lists": self.lists,
                "probes": self.probes, "sizes": self.sizes}

    @classmethod
    def parse(cls, entry: object) -> Part:
        if not isinstance(entry, dict):
            raise ValueError("a part is not a table")
        stem, shards = entry.get("stem"), entry.get("shards")
        if not (isinstance(stem, str) and stem.startswith("index-") and stem.replace("-", "").isalnum()):
            raise ValueError(f"part stem {str(stem)[:40]!r} is not an index file name")
        if not (isinstance(shards, list) and shards and all(isinstance(s, str) for s in shards)):
            raise ValueError(f"part {stem} names no shards")
        numbers = [entry.get(name) for name in ("rows", "lists", "probes")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError(f"part {stem}: rows, lists and probes are not counts")
        sizes = entry.get("sizes")
        if not (isinstance(sizes, dict) and all(isinstance(v, int) for v in sizes.values())):
            raise ValueError(f"part {stem}: no file sizes")
        return cls(stem, list(shards), *numbers, dict(sizes))


def read_sidecar(store) -> tuple[dict, list[Part]] | None:
    """(the sidecar's fields, its parts), or None when the store has no index; ValueError when the sidecar is
    damaged or was made for another model, width or format."""
    folder = _local(store)
    path = folder / INDEX_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{INDEX_FILE} cannot be read ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{INDEX_FILE} is not a zsclip index sidecar")
    if data.get("version") != VERSION:
        raise ValueError(f"index format version {data.get('version')!r}, this zsclip reads {VERSION}")
    if data.get("embed_dim") != store.embed_dim or data.get("fingerprint") != store.fingerprint:
        raise ValueError("it was built for another model or width than the store's")
    parts = data.get("parts")
    if not isinstance(parts, list):
        raise ValueError("its parts are not a list")
    return data, [Part.parse(entry) for entry in parts]


def _local(store) -> Path:
    local = getattr(store.location, "local", None)
    if local is None or not store.manifest.get("format") == "zsclip-store":
        raise InputError(f"{store.folder}: an index is kept beside a local zsclip store's shards (not a remote "
                         "store or a clip-retrieval folder): search it with --exact")
    return Path(local)


# --- a loaded part ------------------------------------------------------------------------------------------
class LoadedPart:
    """A part's files, checked and opened: the FAISS index in memory, ids and vectors memory-mapped."""

    def __init__(self, folder: Path, part: Part, dim: int) -> None:
        faiss = _faiss()
        self.part = part
        for suffix in SUFFIXES:
            name = part.file(suffix)
            size = (folder / name).stat().st_size if (folder / name).exists() else None
            if size is None:
                raise ValueError(f"{name} is missing")
            if part.sizes.get(suffix) != size:
                raise ValueError(f"{name} has {size} bytes, the sidecar says {part.sizes.get(suffix)}")
        self.ids = np.load(folder / part.file(".ids.npy"), mmap_mode="r", allow_pickle=False)
        self.vectors = np.load(folder / part.file(".vectors.npy"), mmap_mode="r", allow_pickle=False)
        if self.ids.dtype != np.int64 or self.ids.shape != (part.rows,):
            raise ValueError(f"{part.file('.ids.npy')} does not hold {part.rows} row ids")
        if self.vectors.shape != (part.rows, dim) or self.vectors.dtype not in (np.float16, np.float32):
            raise ValueError(f"{part.file('.vectors.npy')} does not hold {part.rows} {dim}-d embeddings")
        try:
            self.index = faiss.read_index(str(folder / part.file(".faiss")))
        except RuntimeError as error:
            raise ValueError(f"{part.file('.faiss')} cannot be read ({str(error).splitlines()[0][:120]})") from None
        if self.index.ntotal != part.rows or self.index.d != dim:
            raise ValueError(f"{part.file('.faiss')} holds {self.index.ntotal} {self.index.d}-d rows, not "
                             f"{part.rows} {dim}-d ones")
        shard_at, rows = self.ids >> ROW_BITS, self.ids & ((1 << ROW_BITS) - 1)
        if len(self.ids) and (shard_at.min() < 0 or shard_at.max() >= len(part.shards)):
            raise ValueError(f"{part.file('.ids.npy')} names shards the part does not list")
        self.shard_at, self.rows = np.asarray(shard_at), np.asarray(rows)

    def alive(self, masks: dict[str, np.ndarray]) -> np.ndarray:
        """Per indexed row: whether it is in the store's view now (``masks``: shard name -> view mask)."""
        alive = np.zeros(self.part.rows, dtype=bool)
        for position, shard in enumerate(self.part.shards):
            mask = masks.get(shard)
            if mask is None:
                continue
            mine = self.shard_at == position
            rows = self.rows[mine]
            inside = rows < len(mask)
            alive[np.flatnonzero(mine)[inside]] = mask[rows[inside]]
        return alive

    def search(self, queries: np.ndarray, k: int, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part positions [m, k], exact scores [m, k]) of the ``k`` nearest rows in the view, per query."""
        stale = int(self.part.rows - alive.sum())
        count = max(k * OVERSAMPLE, MIN_CANDIDATES) + stale
        found = candidates(self.index, queries, count, self.part.probes)
        return rescored(found, self.vectors, queries, k, alive)

    def position(self, at: int) -> tuple[str, int]:
        return self.part.shards[int(self.shard_at[at])], int(self.rows[at])


# --- the store's index --------------------------------------------------------------------------------------
class StoreIndex:
    """A store's usable index parts, and the shards of the view they do not cover (searched exactly)."""

    def __init__(self, store, parts: list[LoadedPart], refused: list[str]) -> None:
        self.store = store
        self.parts = parts
        self.refused = refused  # one line per part (or sidecar) that could not be used
        masks = store.view_masks()
        self.masks_of = masks  # the view this index was checked against (``cached`` reuses it while it holds)
        names = [shard["file"] for shard in store.manifest["shards"]]
        self.masks = {names[i]: mask for i, mask in masks.items()}
        covered = {shard for loaded in parts for shard in loaded.part.shards}
        self.uncovered = [name for name in names if name in self.masks and name not in covered]
        self.alive = [loaded.alive(self.masks) for loaded in parts]

    @classmethod
    def open(cls, store, warn: bool = True) -> StoreIndex | None:
        """The store's index (None when it has none); a damaged or stale sidecar or part is refused with one
        warning line naming it and the fix, and the shards it covered are searched exactly."""
        try:
            read = read_sidecar(store)
        except ValueError as error:
            if warn:
                _warn(f"index of store {store.folder} is not used: {error}; rebuild it with `zsclip index "
                      f"{store.folder} --rebuild`")
            return cls(store, [], [str(error)])
        if read is None:
            return None
        try:
            _faiss()
        except InputError as error:
            if warn:
                _warn(f"index of store {store.folder} is not used: {error}")
            return cls(store, [], [str(error)])
        folder, listed = _local(store), {shard["file"] for shard in store.manifest["shards"]}
        parts, refused = [], []
        for part in read[1]:
            gone = [shard for shard in part.shards if shard not in listed]
            try:
                if gone:
                    raise ValueError(f"covers {len(gone)} shard(s) the store no longer lists (compacted?)")
                parts.append(LoadedPart(folder, part, store.embed_dim))
            except (ValueError, OSError) as error:
                refused.append(f"part {part.stem}: {error}")
        if refused and warn:
            _warn(f"index of store {store.folder}: {len(refused)} part(s) not used ({refused[0]}); their rows are "
                  f"searched exactly; `zsclip index {store.folder}` rebuilds them")
        return cls(store, parts, refused)

    @classmethod
    def cached(cls, store) -> StoreIndex | None:
        """``open``, kept on the store handle while its sidecar and shard list are unchanged (a server searches
        one store many times: the parts are loaded once)."""
        try:
            stat = (_local(store) / INDEX_FILE).stat()
            key = (stat.st_mtime_ns, stat.st_size, tuple(shard["file"] for shard in store.manifest["shards"]))
        except OSError:
            key = None
        held = getattr(store, "_zsclip_index", None)
        if key is not None and held is not None and held[0] == key and held[1] is not None \
                and held[1].masks_of is store._masks:
            return held[1]
        index = cls.open(store)
        if key is not None:
            store._zsclip_index = (key, index)
        return index

    def search(self, queries: np.ndarray, k: int, runner=None) -> list[list[tuple[str, int, float]]]:
        """Per query: the ``k`` nearest rows of the view as (shard, row, exact score), best first: each part's
        candidates rescored, the uncovered shards scored exactly, merged. ``runner``: a callable
        ``(parts, alive masks, queries, k) -> per part, per query [(score, shard, row)]`` that searches the parts
        elsewhere (Ray: one task per part); by default they are searched here."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.store.embed_dim))
        merged: list[list[tuple[float, str, int]]] = [[] for _ in range(len(queries))]
        if runner is not None and self.parts:
            for answers in runner([loaded.part for loaded in self.parts], self.alive, queries, k):
                for i, hits in enumerate(answers):
                    merged[i].extend(hits)
        else:
            for loaded, alive in zip(self.parts, self.alive, strict=True):
                for i, hits in enumerate(part_answers(loaded, alive, queries, k)):
                    merged[i].extend(hits)
        for shard, rows, vectors in shard_vectors(self.store, self.uncovered, self.masks):
            positions, scores = exact_top(vectors, queries, k)
            _collect(merged, positions, scores, lambda at, shard=shard, rows=rows: (shard, int(rows[at])))
        return [[(shard, row, score) for score, shard, row in _best(hits, k)] for hits in merged]

    @property
    def rows(self) -> int:
        return sum(int(alive.sum()) for alive in self.alive)


def part_answers(loaded: LoadedPart, alive: np.ndarray, queries: np.ndarray, k: int) -> list[list[tuple]]:
    """One part's partial top-``k`` per query as (exact score, shard, row): what a Ray task returns."""
    positions, scores = loaded.search(queries, k, alive)
    out: list[list[tuple]] = [[] for _ in range(len(queries))]
    _collect(out, positions, scores, loaded.position)
    return out


def _collect(merged, positions, scores, where) -> None:
    for i in range(len(positions)):
        for at, score in zip(positions[i].tolist(), scores[i].tolist(), strict=True):
            if at >= 0:
                merged[i].append((score, *where(at)))


def _best(hits: list[tuple[float, str, int]], k: int) -> list[tuple[float, str, int]]:
    return sorted(hits, key=lambda hit: -hit[0])[:k]


def _warn(message: str) -> None:
    warnings.warn(message, ZsclipWarning, stacklevel=3)


# --- reading shards --------------------------------------------------------------------------------------
def shard_vectors(store, names: list[str], masks: dict[str, np.ndarray]):
    """(shard, rows, float32 unit vectors [n, D]) per shard of ``names``: its rows in the view that have an
    embedding, checked as every store reader checks them (``checked_batch``)."""
    yield from read_shards(store.location, names, masks, store.embed_dim)


def read_shards(location, names: list[str], masks: dict[str, np.ndarray], dim: int):
    """``shard_vectors`` without a store handle (a Ray task has the folder and the masks)."""
    from .store import READ_COLUMNS, checked_batch

    columns = [c for c in READ_COLUMNS if c != "deleted"]
    for name in names:
        mask = masks.get(name)
        if mask is None or not mask.any():
            continue
        reader = location.parquet_file(name)
        offset, rows, vectors = 0, [], []
        for record in reader.iter_batches(batch_size=8192, columns=columns, use_threads=False):
            picked = mask[offset:offset + record.num_rows]
            batch = checked_batch(record, picked, shard=name, offset=offset, embed_dim=dim, classnames=None)
            kept = np.flatnonzero(picked) + offset
            rows.append(kept[[error is None for error in batch.errors]])
            vectors.append(batch.embeddings)
            offset += record.num_rows
        if rows:
            yield name, np.concatenate(rows), np.concatenate(vectors)


# --- building -----------------------------------------------------------------------------------------------
@dataclass
class IndexReport:
    """What ``build`` did: rows and parts now indexed, parts built and dropped, seconds, bytes on disk,
    and (when asked) recall@10 of the index against exact search on sampled queries."""

    rows: int
    parts: int
    built: int
    kept: int
    dropped: list[str]
    seconds: float
    bytes: int
    recall: float | None = None
    queries: int = 0
    notes: list[str] = field(default_factory=list)


def build_part(folder: str, shards: list[str], masks: dict[str, np.ndarray], dim: int, dtype: str,
               lists: int | None = None, probes: int | None = None, threads: int | None = None) -> dict:
    """Build one part over ``shards`` (their rows in ``masks``) and write its files beside them; returns its
    sidecar entry. Runs in this process or in a Ray task (it needs only the folder)."""
    from ..outputs.atomic import atomic_path
    from .location import Location

    location = Location(folder)
    codes, chunks = [], []
    for name, rows, vectors in read_shards(location, shards, masks, dim):
        codes.append((np.int64(shards.index(name)) << ROW_BITS) | rows.astype(np.int64))
        chunks.append(vectors.astype(np.float16 if dtype == "float16" else np.float32))
    ids = np.concatenate(codes) if codes else np.empty(0, dtype=np.int64)
    stored = np.concatenate(chunks) if chunks else np.empty((0, dim), dtype=np.float32)
    lists = auto_lists(len(ids)) if lists is None else min(lists, len(ids))
    probes = auto_probes(lists) if probes is None else min(probes, lists)
    index = train(stored.astype(np.float32), lists, threads)
    stem = f"index-{uuid.uuid4().hex[:12]}"
    part = Part(stem, list(shards), int(len(ids)), int(lists), int(probes))
    base = Path(folder)
    faiss = _faiss()
    for suffix, content in ((".ids.npy", ids), (".vectors.npy", stored), (".faiss", index)):
        with atomic_path(base / part.file(suffix)) as temporary:
            if suffix == ".faiss":
                faiss.write_index(content, str(temporary))
            else:
                with open(temporary, "wb") as handle:
                    np.save(handle, content, allow_pickle=False)
        part.sizes[suffix] = (base / part.file(suffix)).stat().st_size
    return part.record()


def groups(store, names: list[str], part_rows: int) -> list[list[str]]:
    """``names`` (shards, in store order) cut into groups of at most ``part_rows`` rows (a shard is never split)."""
    counts = {shard["file"]: int(shard["rows"]) for shard in store.manifest["shards"]}
    out: list[list[str]] = []
    rows = 0
    for name in names:
        if not out or rows + counts[name] > part_rows:
            out.append([])
            rows = 0
        out[-1].append(name)
        rows += counts[name]
    return out


def build(store, *, rebuild: bool = False, lists: int | None = None, probes: int | None = None,
          part_rows: int = PART_ROWS, check_queries: int = 100, runner=None) -> IndexReport:
    """Build the store's index, or extend it: parts that still check out are kept, new shards get new parts
    (the newest part is rebuilt with them while it is flat and they fit in one part), parts naming shards the
    store no longer lists, damaged parts and parts whose rows mostly left the view are rebuilt. ``runner``:
    a callable ``(jobs) -> entries`` building parts elsewhere (Ray); by default here, one after another.
    ``check_queries`` stored rows are searched with the index and exactly: recall@10 is reported."""
    if lists is not None and lists < 0 or probes is not None and probes < 1 or part_rows < 1:
        raise InputError("--lists is 0 (flat) or more, --probes 1 or more")
    started, wall = time.time(), time.perf_counter()
    folder = _local(store)
    current = None if rebuild else StoreIndex.open(store)
    names = [shard["file"] for shard in store.manifest["shards"]]
    masks = store.view_masks()
    by_name = {names[i]: mask for i, mask in masks.items()}
    kept: list[Part] = []
    dropped = list(current.refused) if current is not None else []
    if current is not None:
        for loaded, alive in zip(current.parts, current.alive, strict=True):
            part = loaded.part
            if part.rows and alive.sum() < (1 - STALE_SHARE) * part.rows:
                dropped.append(f"part {part.stem}: {part.rows - int(alive.sum())} of its {part.rows} rows left the "
                               "store's view")
            elif (lists is not None and part.lists != min(lists, part.rows)) or (
                    probes is not None and part.probes != min(probes, part.lists)):
                dropped.append(f"part {part.stem}: built with other --lists/--probes")
            else:
                kept.append(part)
    covered = {shard for part in kept for shard in part.shards}
    todo = [name for name in names if name in by_name and name not in covered]
    if todo and kept and kept[-1].lists == 0:  # a small flat newest part grows with the new shards
        todo = kept.pop().shards + todo
    jobs = [(str(folder), group, {n: by_name[n] for n in group}, store.embed_dim, store.dtype, lists, probes)
            for group in groups(store, todo, part_rows)]
    entries = runner(jobs) if runner is not None and jobs else [build_part(*job) for job in jobs]
    parts = kept + [Part.parse(entry) for entry in entries]
    parts = [part for part in parts if part.rows]
    _write_sidecar(store, folder, parts)
    _remove_unlisted(folder, parts, started)
    size = sum(sum(part.sizes.values()) for part in parts)
    report = IndexReport(sum(part.rows for part in parts), len(parts), len(entries), len(kept), dropped,
                         time.perf_counter() - wall, size)
    if check_queries:
        report.recall, report.queries = measured_recall(store, check_queries)
    return report


def _write_sidecar(store, folder: Path, parts: list[Part]) -> None:
    from ..outputs.atomic import write_atomically

    faiss = _faiss()
    data = {"format": FORMAT, "version": VERSION, "library": "faiss-cpu", "library_version": faiss.__version__,
            "embed_dim": store.embed_dim, "fingerprint": store.fingerprint, "dtype": store.dtype,
            "metric": "inner product (cosine of unit vectors)", "codes": "IVF lists, 8-bit scalar quantizer",
            "oversample": OVERSAMPLE, "min_candidates": MIN_CANDIDATES,
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parts": [part.record() for part in parts]}
    write_atomically(folder / INDEX_FILE, json.dumps(data, indent=1) + "\n")


def _remove_unlisted(folder: Path, parts: list[Part], before: float) -> None:
    """Delete index files no part lists (replaced parts, a killed build's) made before this build started."""
    listed = {part.file(suffix) for part in parts for suffix in SUFFIXES}
    for path in folder.iterdir():
        name = path.name
        ours = name.startswith("index-") and name.endswith(SUFFIXES) or (
            name.startswith(".index-") and name.endswith(".partial"))
        if ours and name not in listed:
            try:
                if path.stat().st_mtime < before:  # a concurrent build's new files are left to it
                    path.unlink()
            except OSError:
                pass


def remove(store) -> bool:
    """Delete the store's index (sidecar first, so no reader sees parts without it); whether there was one."""
    folder = _local(store)
    sidecar = folder / INDEX_FILE
    existed = sidecar.exists()
    if existed:
        sidecar.unlink()
    _remove_unlisted(folder, [], time.time() + 1)
    return existed


def measured_recall(store, queries: int, k: int = 10, seed: int = 0) -> tuple[float | None, int]:
    """(recall@``k`` of the index against exact search, queries used): ``queries`` rows sampled from the view
    (each a query; its own row counts as a neighbour in both answers), searched both ways."""
    index = StoreIndex.open(store, warn=False)
    if index is None or not index.parts:
        return None, 0
    pool = [(loaded, np.flatnonzero(alive)) for loaded, alive in zip(index.parts, index.alive, strict=True)]
    total = sum(len(rows) for _, rows in pool)
    if not total:
        return None, 0
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(queries, total), replace=False))
    sample, start = [], 0
    for loaded, rows in pool:
        mine = picks[(picks >= start) & (picks < start + len(rows))] - start
        sample.extend(np.asarray(loaded.vectors[rows[mine]], dtype=np.float32))
        start += len(rows)
    vectors = np.stack(sample)
    approximate = index.search(vectors, k)
    truth = exact_search(index, vectors, k)
    hits = sum(len({(s, r) for s, r, _ in a} & {(s, r) for s, r, _ in t}) for a, t in zip(approximate, truth,
                                                                                          strict=True))
    return hits / max(1, sum(len(t) for t in truth)), len(vectors)


def exact_search(index: StoreIndex, queries: np.ndarray, k: int) -> list[list[tuple[str, int, float]]]:
    """The exact answer over what ``index`` answers from (its parts' stored vectors and the uncovered shards)."""
    merged: list[list[tuple[float, str, int]]] = [[] for _ in range(len(queries))]
    for loaded, alive in zip(index.parts, index.alive, strict=True):
        rows = np.flatnonzero(alive)
        for start in range(0, len(rows), 65536):
            chunk = rows[start:start + 65536]
            positions, scores = exact_top(loaded.vectors[chunk], queries, k)
            _collect(merged, positions, scores, lambda at, chunk=chunk, loaded=loaded: loaded.position(chunk[at]))
    for shard, rows, vectors in shard_vectors(index.store, index.uncovered, index.masks):
        positions, scores = exact_top(vectors, queries, k)
        _collect(merged, positions, scores, lambda at, shard=shard, rows=rows: (shard, int(rows[at])))
    return [[(shard, row, score) for score, shard, row in _best(hits, k)] for hits in merged]


def has_index(store) -> bool:
    """Whether the store keeps an index sidecar (a local zsclip store only)."""
    local = getattr(store.location, "local", None)
    return local is not None and store.manifest.get("format") == "zsclip-store" and (Path(local) / INDEX_FILE).exists()


__all__ = ["INDEX_FILE", "IndexReport", "LoadedPart", "Part", "StoreIndex", "auto_lists", "auto_probes", "build",
           "build_part", "candidates", "has_index", "measured_recall", "remove", "rescored", "train"]
