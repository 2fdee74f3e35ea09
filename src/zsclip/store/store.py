"""``EmbeddingStore``: open, create, append to and stream an embedding store (see format.py).

Reading streams shard by shard in record batches, so classify / eval / search over a store of any
size hold one batch of embeddings at a time, plus the view: one bool per row, computed without
holding every row's path (see ``view_masks``). Writing appends whole shards: each is written under a
temporary name, synced, renamed (the folder synced), then listed in the manifest, which is replaced
atomically and durably; that is what makes a killed ``zsclip embed`` resumable and a power loss
harmless. ``zsclip compact`` (compact.py) rewrites shards without the rows that left the view.
Every commit happens under the store's write lock, against the manifest as it is on disk then
(re-read when the lock is taken), so writers never drop each other's shards.

Nothing read from a store is trusted: the manifest is validated field by field (format.py), and
a row whose path, label or embedding is missing, out of range or not finite becomes an error row
naming its shard, which classify / eval / search report and go past.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import __version__
from ..errors import ClassifierFileError
from .format import (
    DTYPES,
    FORMAT,
    LAYOUT_FIELD,
    MANIFEST,
    PACKED,
    PACKED_DTYPES,
    StoreError,
    read_manifest,
    schema,
    shard_write_options,
    written_version,
)
from .halves import rows_widened, widened
from .location import Location

#: What ``batches`` reads by default (everything but the file facts).
#: Rows per Parquet row group: the unit a reader decodes at once (4096 x 768 float16 = 6 MB).
ROW_GROUP_ROWS = 4096
READ_COLUMNS = ("path", "resolved", "label", "error", "deleted", "embedding")
#: What a multi-label store's reader adds: each row's label indices.
MULTI_LABEL_COLUMNS = ("labels",)
#: Optional columns of shards holding video clips (format 1 readers ignore them): seconds into the video.
SPAN_COLUMNS = ("start", "end")
#: How far a stored embedding's length may be from 1 and be used as stored (embed stores them
#: L2-normalised; float16 rounding moves the length by about 1e-3): longer or shorter ones (written
#: by hand or damaged) are scaled to length 1 when read, so no score leaves [-1, 1].
NORM_TOLERANCE = 0.05
#: How long ``append`` waits for another writer's commit to finish before giving up.
APPEND_LOCK_WAIT_S = 30.0
TRANSFORMERS_PREFIX = "transformers:"


@dataclass
class StoreBatch:
    """Rows of the store's view: paths, errors (None = has an embedding), labels (-1 = none), and
    the float32 embeddings [n_ok, D] of the rows without an error, in row order. A multi-label
    store's rows also have ``label_sets``: each row's sorted class indices (``labels`` are then -1)."""

    paths: list[str]
    errors: list[str | None]
    labels: list[int]
    embeddings: np.ndarray
    label_sets: list[tuple[int, ...]] | None = None
    #: per row, a video clip's (start, end) seconds or None; None when the shard has no spans
    spans: list[tuple[float, float] | None] | None = None
    #: per row, its identity: the resolved absolute path recorded when it was embedded (or the URL). ``paths``
    #: are the names as given then, maybe relative to a folder the reader is not in: match files by ``keys``.
    keys: list[str] | None = None


def is_clip_retrieval_output(location: Location) -> bool:
    """clip-retrieval's output folder (``img_emb/`` + ``metadata/``) rather than a zsclip store."""
    return location.local is not None and (location.local / "img_emb").is_dir() and not location.exists(MANIFEST)


class EmbeddingStore:
    """A folder of Parquet shards plus a manifest; see ``zsclip.store.format`` for the layout."""

    def __init__(self, folder: Location | Path, manifest: dict) -> None:
        self.location = folder if isinstance(folder, Location) else Location(folder)
        self.folder = self.location.local if self.location.local is not None else self.location
        self.manifest = manifest
        self._masks: dict[int, np.ndarray] | None = None  # the view, computed once per manifest state
        self._lock_depth = 0  # > 0 while this handle holds the store's write lock
        self._locked_at = 0.0  # when it took it (time.time())
        # the view's paths as ``facts`` found them under the lock, and the paths appended since: what
        # lets ``append`` mark a shard that only adds new paths (``new_paths``, see ``view_masks``)
        self._view_keys: dict | None = None
        self._added_keys: set[str] = set()
        self._timed_shards: dict[str, bool] = {}  # shard file -> whether it has clip spans (files never change)

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, model: str | None = None) -> EmbeddingStore:
        """A store made by ``zsclip embed``. clip-retrieval's output folder is ``zsclip.store.open_store``'s
        (which opens either kind)."""
        location = Location(path)
        if is_clip_retrieval_output(location):
            raise StoreError(f"{location} is a clip-retrieval output, not a zsclip store: open it with "
                             "zsclip.store.open_store(path, model=...)")
        store = cls(location, read_manifest(location))
        if model is not None and not same_model(model, store.model):
            raise StoreError(f"store {location} holds embeddings of model {store.model}, not {model}: drop --model "
                             "(a store names its own model), or embed the images with that model into another store")
        return store

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, encoder, *, precision: str, dtype: str = "float16",
                       classnames: list[str] | None = None, multi_label: bool = False) -> EmbeddingStore:
        """The store at ``path`` for adding ``encoder``'s embeddings: opened (and checked to be the
        same model, dtype and classes) when it exists, else created empty. ``multi_label``: rows hold
        a set of labels each (``classnames`` index them), not one class. ``encoder`` None opens an
        existing store only, its model to be checked by the caller once loaded (``check_encoder``)."""
        folder = Location(path)
        if dtype not in DTYPES:
            raise StoreError(f"storage dtype {dtype!r}: use float16 (half the disk) or float32 (exact)")
        if folder.exists(MANIFEST):
            return cls._opened_for(folder, encoder, dtype, classnames, multi_label)
        if encoder is None:
            raise StoreError(f"{folder} is not a zsclip store yet: a model is needed to create one")
        if folder.exists() and (not folder.is_dir() or set(folder.names()) - {".lock"}):  # a failed creation's lock
            raise StoreError(f"{folder} exists and is not a zsclip store: give a new folder name for --output")
        folder.mkdir()
        with folder.lock(wait=APPEND_LOCK_WAIT_S):
            if folder.exists(MANIFEST):  # another run created it meanwhile: use theirs, never overwrite it
                return cls._opened_for(folder, encoder, dtype, classnames, multi_label)
            return cls._created(folder, encoder, precision, dtype, classnames, multi_label)

    @classmethod
    def _opened_for(cls, folder: Location, encoder, dtype: str, classnames: list[str] | None,
                    multi_label: bool = False) -> EmbeddingStore:
        store = cls(folder, read_manifest(folder))
        if encoder is not None:
            store.check_encoder(encoder)
        if store.dtype != dtype:
            raise StoreError(f"store {folder} holds {store.dtype} embeddings, not {dtype}: use another --output")
        if (store.classnames or None) != (classnames or None):
            raise StoreError(f"store {folder} was made with other class labels: use another --output")
        if store.multi_label != multi_label:
            held = "several labels per image" if store.multi_label else "one class per image"
            raise StoreError(f"store {folder} holds {held}, and this data does not: use another --output")
        return store

    @classmethod
    def _created(cls, folder: Location, encoder, precision: str, dtype: str,
                 classnames: list[str] | None, multi_label: bool = False) -> EmbeddingStore:
        from ..pipeline.device_decode import device_preprocessing

        preprocessing = device_preprocessing(encoder.image_transform())
        manifest = {
            "format": FORMAT, "version": written_version(multi_label, packed=True), LAYOUT_FIELD: PACKED,
            "zsclip_version": __version__,
            "model": model_name(encoder), "pretrained": getattr(encoder, "pretrained", None),
            "fingerprint": encoder.fingerprint, "backend": encoder.backend, "embed_dim": int(encoder.embed_dim),
            "precision": precision, "dtype": dtype, "logit_scale": float(encoder.logit_scale),
            "logit_bias": encoder.logit_bias,
            "preprocessing": None if preprocessing is None else {
                "size": preprocessing.size, "crop": list(preprocessing.crop), "resize": preprocessing.interpolation,
                "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
            "classnames": classnames, **({"multi_label": True} if multi_label else {}), "shards": [],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        store = cls(folder, manifest)
        store._write_manifest()
        return store

    # --- what it holds -----------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def model(self) -> str:
        """The model as ``load_model`` takes it (a transformers model keeps its ``transformers:``
        prefix, also in stores written before the prefix was recorded)."""
        name = self.manifest.get("model") or ""
        if self.manifest.get("backend") == "transformers" and name and not name.startswith(TRANSFORMERS_PREFIX):
            name = TRANSFORMERS_PREFIX + name
        return name

    @property
    def pretrained(self) -> str | None:
        return self.manifest.get("pretrained")

    @property
    def fingerprint(self) -> str | None:
        return self.manifest.get("fingerprint")

    @property
    def classnames(self) -> list[str] | None:
        return self.manifest.get("classnames")

    @property
    def multi_label(self) -> bool:
        """Whether each row holds a set of labels (embedded from a multi-label manifest)."""
        return bool(self.manifest.get("multi_label"))

    @property
    def video_sampling(self) -> dict | None:
        """How the store's video clips were sampled (``Sampling.record()``), or None (none recorded)."""
        return self.manifest.get("video_sampling")

    def check_video_sampling(self, asked: dict, reembed: bool = False) -> None:
        """Refuse adding video clips sampled otherwise than the stored ones (see ``sampling_mismatch``)."""
        problem = sampling_mismatch(self.folder, self.video_sampling, asked, reembed)
        if problem:
            raise StoreError(problem)

    def record_video_sampling(self, sampling: dict, unfinished: bool = False) -> None:
        """Keep ``sampling`` in the manifest (``unfinished``: a re-embed with it is under way)."""
        with self._locked(APPEND_LOCK_WAIT_S):
            self.manifest["video_sampling"] = {**sampling, **({"unfinished": True} if unfinished else {})}
            self._write_manifest()

    @property
    def packed(self) -> bool:
        """Whether this store writes each embedding as one binary value (``store.format``: made by a zsclip
        that reads version 3), or as a list of values (made before: kept so, for the zsclip that made it)."""
        return self.manifest.get(LAYOUT_FIELD) == PACKED

    @property
    def schema(self) -> pa.Schema:
        """The columns every shard this store writes has (a shard in the other layout is read as well)."""
        return schema(self.embed_dim, self.dtype, self.multi_label, self.packed)

    @property
    def read_columns(self) -> tuple[str, ...]:
        """What ``batches`` reads of each shard."""
        return READ_COLUMNS + (MULTI_LABEL_COLUMNS if self.multi_label else ())

    @property
    def shard_files(self) -> list[Path | str]:
        """The committed shards: Paths for a local store, URIs for a remote one."""
        return [self.location.path_of(shard["file"]) for shard in self.manifest["shards"]]

    def check_encoder(self, encoder) -> None:
        """Refuse a model other than the one the embeddings came from (they would not match)."""
        if int(encoder.embed_dim) != self.embed_dim:
            raise StoreError(f"store {self.folder} holds {self.embed_dim}-d embeddings, but model {encoder.name} makes "
                             f"{int(encoder.embed_dim)}-d ones: use the model that made the store")
        if self.fingerprint and self.fingerprint != encoder.fingerprint and same_model(model_name(encoder), self.model):
            raise StoreError(f"store {self.folder} holds embeddings of {self.model} with other weights "
                             f"({self.pretrained or 'unnamed'}, {self.fingerprint}) than the ones loaded "
                             f"({encoder.fingerprint}): load the same weights, or embed into another store")
        if self.fingerprint and self.fingerprint != encoder.fingerprint:
            raise StoreError(f"store {self.folder} holds embeddings of model {self.model} ({self.fingerprint}), not "
                             f"{encoder.name} ({encoder.fingerprint}): use --model {self.model}, or embed again")

    def check_classifier(self, classifier) -> None:
        """Refuse a classifier built for another model than the store's."""
        width = classifier.embed_dim
        if width != self.embed_dim:
            raise ClassifierFileError(f"classifier takes {width}-d features, but store {self.folder} holds "
                                      f"{self.embed_dim}-d embeddings of {self.model}: build the classifier with "
                                      f"`zsclip build --model {self.model}`")
        expected = classifier.provenance.get("fingerprint")
        if self.fingerprint and expected and expected != self.fingerprint:
            raise ClassifierFileError(f"classifier was built for model {classifier.provenance.get('model')}, but store "
                                      f"{self.folder} holds embeddings of {self.model}: rebuild the classifier with "
                                      f"`zsclip build --model {self.model}`")

    # --- reading -----------------------------------------------------------------------------
    def view_masks(self) -> dict[int, np.ndarray]:
        """Per readable shard, which of its rows are in the view: each path's latest row, unless
        that row is a deletion. Computed once per state of the manifest (``append`` resets it), so
        an unreadable shard is reported once. One bool per row is all it keeps.

        Memory stays flat in the number of rows: a shard marked ``new_paths`` in the manifest (a
        compacted shard, or one whose writer knew the view and added only paths not in it, without
        deletions) needs no path read at all unless a later unmarked shard may replace some of its rows;
        only the unmarked shards' paths are gathered (a hash aggregate in Arrow's native memory, never
        the embeddings). A store made only of marked shards (any store after ``zsclip compact``)
        opens by reading each shard's footer."""
        if self._masks is None:
            self._masks = self._compute_view()
        return self._masks

    def _compute_view(self) -> dict[int, np.ndarray]:
        shards = self.manifest["shards"]
        sizes: dict[int, int] = {}  # readable shard -> its rows, from its footer (reported in shard order)
        for index, shard in enumerate(shards):
            try:
                reader = self.location.parquet_file(shard["file"])
                self._check_shard(shard["file"], reader.schema_arrow)
                sizes[index] = reader.metadata.num_rows
            except (OSError, pa.ArrowException, ShardError) as error:
                _warn_unreadable(shard["file"], error)
        marked = [index for index in sizes if shards[index].get("new_paths") is True]
        unmarked = set(sizes) - set(marked)
        masks, keys = self._latest_rows(unmarked) if unmarked else ({}, {})
        for index in marked:
            mask = np.ones(sizes[index], dtype=bool)
            later = [keys[n] for n in sorted(keys) if n > index]
            if later:  # rows a later unmarked shard replaced or deleted leave the view
                name = shards[index]["file"]
                try:
                    resolved = self.location.read_table(name, ["resolved"]).column("resolved")
                except (OSError, pa.ArrowException) as error:
                    _warn_unreadable(name, error)
                    continue
                mask &= ~pc.is_in(resolved, value_set=pa.concat_arrays(later), skip_nulls=True).to_numpy(
                    zero_copy_only=False)
            masks[index] = mask
        return {index: masks[index] for index in sorted(masks)}

    def _latest_rows(self, only: set[int]) -> tuple[dict[int, np.ndarray], dict[int, pa.Array]]:
        """The view's rows of the shards ``only`` (those not marked ``new_paths``), by their paths:
        each path's latest row among them, unless it is a deletion; and the paths of each of them."""
        tables = list(self._tables(("resolved", "deleted"), only=only))
        if not tables:
            return {}, {}
        sizes = [table.num_rows for _, table in tables]
        resolved = pa.concat_arrays([table.column("resolved").combine_chunks() for _, table in tables])
        # a null ``deleted`` is not a deletion; a null ``resolved`` (damage) cannot be grouped with
        # anything: each such row stays in the view on its own, where ``batches`` reports it
        deleted = np.concatenate([table.column("deleted").fill_null(False).to_numpy(zero_copy_only=False)
                                  for _, table in tables]).astype(bool)
        order = pa.array(np.arange(len(resolved), dtype=np.int64))
        latest = pa.table({"resolved": resolved, "order": order}).group_by("resolved").aggregate([("order", "max")])
        keep = np.zeros(len(resolved), dtype=bool)
        keep[latest.column("order_max").to_numpy()] = True
        keep[resolved.is_null().to_numpy(zero_copy_only=False)] = True
        keep &= ~deleted
        offsets = np.cumsum([0, *sizes])
        return ({index: keep[offsets[n] : offsets[n + 1]] for n, (index, _) in enumerate(tables)},
                {index: resolved.slice(offsets[n], sizes[n]) for n, (index, _) in enumerate(tables)})

    def view_rows(self, rows) -> list[tuple[int, int]]:
        """(shard index, row in that shard's file) of each of ``rows``: positions in the view, in
        the order ``batches`` yields them (0 = the first row of the first batch)."""
        masks = self.view_masks()
        order = sorted(masks)
        counts = np.cumsum([0] + [int(masks[index].sum()) for index in order])
        wanted = np.asarray(list(rows), dtype=np.int64)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= counts[-1]):
            raise IndexError(f"view row out of range: the store's view has {int(counts[-1])} rows")
        shard_of = np.searchsorted(counts, wanted, side="right") - 1
        out: list[tuple[int, int]] = [(0, 0)] * len(wanted)
        for n in np.unique(shard_of).tolist():
            positions = np.flatnonzero(masks[order[n]])
            for i in np.flatnonzero(shard_of == n).tolist():
                out[i] = (order[n], int(positions[wanted[i] - counts[n]]))
        return out

    def keys_at(self, rows, column: str = "resolved") -> list[str]:
        """Each of ``rows``' identity (``resolved``: the path recorded absolute when it was embedded,
        what ``StoreBatch.keys`` holds) or, with ``column="path"``, its path as given (``StoreBatch.paths``),
        read from disk for just those rows. ``rows`` are positions in the view (see ``view_rows``).

        This is how an answer that names a few rows of a big store (search hits, duplicates, index
        candidates) gets their paths without holding every row's path in memory: per shard touched,
        only the row groups holding wanted rows are read, and only the path columns. A damaged row
        without a path gets the name ``batches`` gives it (``<SHARD row N>``)."""
        located = self.view_rows(rows)
        out: list[str] = [""] * len(located)
        by_shard: dict[int, list[int]] = {}
        for i, (shard_index, _) in enumerate(located):
            by_shard.setdefault(shard_index, []).append(i)
        for shard_index, wanted in by_shard.items():
            name = self.manifest["shards"][shard_index]["file"]
            reader = self.location.parquet_file(name)
            sizes = [reader.metadata.row_group(g).num_rows for g in range(reader.metadata.num_row_groups)]
            starts = np.cumsum([0, *sizes])
            file_rows = np.array([located[i][1] for i in wanted], dtype=np.int64)
            group_of = np.searchsorted(starts, file_rows, side="right") - 1
            groups = sorted(set(group_of.tolist()))  # only the row groups holding wanted rows are read
            table = reader.read_row_groups(groups, columns=["path", "resolved"], use_threads=False)
            offset_of = dict(zip(groups, np.cumsum([0] + [sizes[g] for g in groups]).tolist(), strict=False))
            local = [offset_of[int(g)] + int(row - starts[g]) for g, row in zip(group_of, file_rows, strict=True)]
            picked = table.take(pa.array(local, type=pa.int64()))
            paths, resolved = picked.column("path").to_pylist(), picked.column("resolved").to_pylist()
            for j, i in enumerate(wanted):
                path = paths[j] if paths[j] is not None else resolved[j] if resolved[j] is not None \
                    else f"<{name} row {located[i][1]}>"
                out[i] = path if column == "path" else resolved[j] if resolved[j] is not None else path
        return out

    def facts(self) -> dict[str, tuple[int | None, int | None]]:
        """resolved path -> (size, mtime_ns) of its latest row: what ``embed`` compares to skip work."""
        masks = self.view_masks()
        out: dict[str, tuple[int | None, int | None]] = {}
        for shard_index, table in self._tables(("resolved", "size", "mtime_ns"), only=masks):
            mask = masks[shard_index]
            rows = np.flatnonzero(mask)
            picked = table.take(pa.array(rows))
            for key, size, mtime in zip(picked.column("resolved").to_pylist(), picked.column("size").to_pylist(),
                                        picked.column("mtime_ns").to_pylist(), strict=True):
                if key is not None:  # a damaged row without its identity matches no file: it is encoded again
                    out[key] = (size, mtime)
        if self._lock_depth:  # a writer's view under its lock: what ``append`` checks new paths against
            self._view_keys, self._added_keys = out, set()
        return out

    def __len__(self) -> int:
        return int(sum(mask.sum() for mask in self.view_masks().values()))

    @property
    def timed(self) -> bool:
        """Whether any shard holds video clips (rows with start and end seconds). Each shard's footer is read
        once per handle (a listed shard file is never rewritten): every search of a store asks, and a 10 M-row
        store has 100 shards."""
        for shard in self.manifest["shards"]:
            name = shard["file"]
            if name not in self._timed_shards:
                try:
                    self._timed_shards[name] = "start" in self.location.parquet_file(name).schema_arrow.names
                except (OSError, pa.ArrowException):
                    continue
            if self._timed_shards[name]:
                return True
        return False

    def batches(self, batch_size: int = 8192) -> Iterator[StoreBatch]:
        """The view's rows, shard by shard, in record batches of at most ``batch_size``."""
        masks = self.view_masks()
        if not any(mask.any() for mask in masks.values()):
            raise StoreError(f"store {self.folder} is empty: add images with `zsclip embed IMAGES --output "
                             f"{self.folder}`")
        for shard_index, shard in enumerate(self.manifest["shards"]):
            if shard_index not in masks:
                continue  # unreadable: warned about while computing the view
            try:
                reader = self.location.parquet_file(shard["file"])
                self._check_shard(shard["file"], reader.schema_arrow)
                offset = 0
                columns = list(self.read_columns) + [c for c in SPAN_COLUMNS if c in reader.schema_arrow.names]
                for record in reader.iter_batches(batch_size=batch_size, columns=columns, use_threads=False):
                    rows = record.num_rows
                    batch = self._batch(record, masks[shard_index][offset : offset + rows], shard["file"], offset)
                    del record  # its Arrow buffers freed here, then the allocator's free pages given back
                    _release_arrow_memory()
                    yield batch
                    offset += rows
            except (OSError, pa.ArrowException, ShardError) as error:
                _warn_unreadable(shard["file"], error)

    def _batch(self, record: pa.RecordBatch, mask: np.ndarray, shard: str, offset: int) -> StoreBatch:
        return checked_batch(record, mask, shard=shard, offset=offset, embed_dim=self.embed_dim,
                             classnames=self.classnames, multi_label=self.multi_label)

    def _tables(self, columns: tuple[str, ...], only=None) -> Iterator[tuple[int, pa.Table]]:
        """(index, table of ``columns``) per readable shard (of those in ``only``, when given)."""
        for shard_index, shard in enumerate(self.manifest["shards"]):
            if only is not None and shard_index not in only:
                continue
            try:
                self._check_shard(shard["file"], self.location.parquet_file(shard["file"]).schema_arrow)
                table = self.location.read_table(shard["file"], list(columns))
            except (OSError, pa.ArrowException, ShardError) as error:
                _warn_unreadable(shard["file"], error)
                continue
            yield shard_index, table

    def _check_shard(self, name: str, found: pa.Schema) -> None:
        """A shard whose columns are not the manifest's (another width or dtype, a foreign file) is
        skipped like a damaged one: its embeddings would not fit the store's classifiers."""
        for field in self.schema:
            indices = found.get_all_field_indices(field.name)
            if not indices:
                raise ShardError(f"no column {field.name!r}")
            if len(indices) > 1:
                raise ShardError(f"column {field.name!r} appears more than once")
            index = indices[0]
            if field.name == "embedding" and embedding_fits(found.field(index).type, self.embed_dim, self.dtype):
                continue
            if not found.field(index).type.equals(field.type):
                raise ShardError(f"column {field.name!r} is {found.field(index).type}, the store's is {field.type}")

    # --- writing -----------------------------------------------------------------------------
    def append(self, rows: list[dict], embeddings: list[np.ndarray | None]) -> Path:
        """Commit one shard: ``rows`` (the schema's columns but the embedding) and each row's
        embedding (None for error and deleted rows). The shard counts once the manifest lists it.

        Under the write lock (taken here unless this handle holds it, waiting up to
        ``APPEND_LOCK_WAIT_S`` for another writer's commit): the shard is added to the manifest as
        it is on disk, so shards other handles or processes committed meanwhile stay listed."""
        dim, dtype = self.embed_dim, self.dtype
        numpy_dtype = np.float16 if dtype == "float16" else np.float32
        columns = {name: [row.get(name) for row in rows] for name in self.schema.names if name != "embedding"}
        if self.packed:
            columns["embedding"] = packed_column(embeddings, dim, PACKED_DTYPES[dtype])
        elif isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:  # every row has one: no per-row objects
            flat = pa.array(np.ascontiguousarray(embeddings, dtype=numpy_dtype).reshape(-1))
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        else:
            flat = [None if e is None else np.asarray(e, dtype=numpy_dtype).reshape(-1) for e in embeddings]
            columns["embedding"] = pa.array(flat, type=pa.list_(DTYPES[dtype], dim))
        shard_schema = self.schema
        if any(row.get("start") is not None for row in rows):  # video clips: optional span columns
            for name in SPAN_COLUMNS:
                columns[name] = [row.get(name) for row in rows]
                shard_schema = shard_schema.append(pa.field(name, pa.float64()))
        table = pa.table(columns, schema=shard_schema)
        with self._locked(APPEND_LOCK_WAIT_S):
            keys = [row.get("resolved") for row in rows]
            name = f"shard-{len(self.manifest['shards']):05d}-{uuid.uuid4().hex[:8]}.parquet"
            self.location.write_table(name, table, row_group_size=ROW_GROUP_ROWS, **shard_write_options(shard_schema))
            entry = {"file": name, "rows": len(rows)}
            if self._adds_new_paths(rows, keys):
                entry["new_paths"] = True
            self.manifest["shards"].append(entry)
            try:
                self._write_manifest()
            except BaseException:
                self.manifest["shards"].pop()  # not committed: this run's shard goes, nobody else's
                self.location.delete(name)
                raise
            finally:
                self._masks = None
            if self._view_keys is not None:
                self._added_keys.update(key for key in keys if key is not None)
        return self.location.path_of(name)

    def _adds_new_paths(self, rows: list[dict], keys: list[str | None]) -> bool:
        """Whether a shard of ``rows`` may be marked ``new_paths``: no deletion, no path twice, and no
        path the view holds (as ``facts`` read it under this lock, plus what was appended since).
        Unknown (no ``facts`` under the lock) is no: an unmarked shard is always read right."""
        if self._view_keys is None or any(row.get("deleted") for row in rows):
            return False
        named = [key for key in keys if key is not None]
        return len(set(named)) == len(named) and not any(
            key in self._view_keys or key in self._added_keys for key in named)

    def remove_leftovers(self) -> list[Path | str]:
        """Delete what a killed writer left behind: shard files the manifest on disk does not list
        (renamed but never committed), and the temporary files of an unfinished shard or manifest
        write (``.shard-*.partial``, ``.zsclip-store.json.*.partial``: a SIGKILL skips their
        clean-up). Only under this handle's write lock, against the manifest re-read under it, and
        only files older than the moment the lock was taken: every writer writes and commits under
        the lock, so such a file belongs to no live writer. Object stores have no lock: nothing is
        removed there (a leftover is ignored by readers; it only takes space)."""
        if self._lock_depth == 0 or self.location.local is None:
            return []
        listed = {shard["file"] for shard in self.manifest["shards"]}
        removed: list[Path | str] = []
        for name in self.location.names():
            uncommitted = name.startswith("shard-") and name.endswith(".parquet") and name not in listed
            unfinished = name.startswith((".shard-", f".{MANIFEST}.")) and name.endswith(".partial")
            if not (uncommitted or unfinished):
                continue
            try:
                if os.lstat(self.location.local / name).st_mtime > self._locked_at:
                    continue
            except OSError:
                continue
            self.location.delete(name)
            removed.append(self.location.path_of(name))
        return removed

    @contextlib.contextmanager
    def writing(self) -> Iterator[EmbeddingStore]:
        """Hold the store's write lock for a whole run (``embed``): the manifest is re-read when it
        is taken, what killed writers left is removed, and other writers wait or are refused."""
        with self._locked(0.0):
            self.remove_leftovers()
            yield self

    @contextlib.contextmanager
    def _locked(self, wait: float) -> Iterator[None]:
        """The write lock, re-entrant per handle. Taking it re-reads the manifest from disk: this
        handle's copy may predate another writer's commits."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with self.location.lock(wait=wait):
            self._locked_at = time.time()
            self._lock_depth = 1
            try:
                self._reload()
                yield
            finally:
                self._lock_depth = 0
                self._view_keys, self._added_keys = None, set()  # another writer may come next

    def _reload(self) -> None:
        """Take the manifest on disk as this handle's (it must still describe the same store)."""
        current = read_manifest(self.location)
        for field in ("embed_dim", "dtype", "model", "fingerprint", "classnames", "multi_label"):
            if current.get(field) != self.manifest.get(field):
                raise StoreError(f"store {self.folder} was replaced by another store since it was opened (its "
                                 f"{field} changed): open it again")
        if current["shards"] != self.manifest["shards"]:
            self._masks = None
            self._view_keys = None  # another writer changed the view since ``facts`` read it
        self.manifest = current

    def _write_manifest(self) -> None:
        self.manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.location.write_text(MANIFEST, json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n")

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.folder)!r}, model={self.model!r}, shards={len(self.manifest['shards'])})"


class ShardError(ValueError):
    """A shard file that is readable Parquet but not a shard of this store."""


def packed_column(embeddings, dim: int, little_endian: str,
                  missing: np.ndarray | None = None) -> pa.FixedSizeBinaryArray:
    """The packed embedding column (``store.format``): each row's D values as one binary value, from an [n, D]
    array (``missing``: the rows that have none, null) or a list of rows, None for a row without one."""
    if not (isinstance(embeddings, np.ndarray) and embeddings.ndim == 2):
        missing = np.array([e is None for e in embeddings], dtype=bool)
        embeddings = np.array([np.zeros(dim, dtype=little_endian) if e is None
                               else np.asarray(e, dtype=little_endian).reshape(dim)
                               for e in embeddings]).reshape(len(missing), dim)
    data = np.ascontiguousarray(embeddings, dtype=little_endian)
    validity = pa.array(~missing).buffers()[1] if missing is not None and missing.any() else None
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(dim * data.itemsize), len(data),
                                                [validity, pa.py_buffer(data)])


def embedding_fits(found: pa.DataType, dim: int, dtype: str) -> bool:
    """Whether an embedding column of type ``found`` holds ``dim`` values of ``dtype`` per row in one of the two
    layouts (``store.format``): packed, or a list. A store made before packed embeddings and extended or
    compacted since keeps its lists; a variable-length list of the right item type is accepted too (other
    writers): its rows' lengths are checked one by one when read."""
    if pa.types.is_fixed_size_binary(found):
        return found.byte_width == dim * DTYPES[dtype].byte_width
    if pa.types.is_fixed_size_list(found):
        return found.list_size == dim and found.value_type.equals(DTYPES[dtype])
    return (pa.types.is_list(found) or pa.types.is_large_list(found)) and found.value_type.equals(DTYPES[dtype])


def _taken(rows: pa.RecordBatch | pa.Table | pa.Array, indices) -> pa.RecordBatch | pa.Table | pa.Array:
    """``rows.take(indices)`` for ascending, distinct ``indices``; ``rows`` itself when they are every row (the
    common case of a clean shard: a copy of every embedding saved per batch)."""
    return rows if len(indices) == len(rows) else rows.take(pa.array(indices, type=pa.int64()))


def checked_batch(record: pa.RecordBatch | pa.Table, mask: np.ndarray, *, shard: str, offset: int, embed_dim: int,
                  classnames: list[str] | None, multi_label: bool = False) -> StoreBatch:
    """The rows of ``record`` that ``mask`` keeps (rows ``offset``... of ``shard``), each checked: a row
    without a path, with a label that is not one of the store's classes, or whose embedding is
    missing, of another length, not finite or all zeros becomes an error row naming the
    shard and the row. No allocation depends on a value in the file. Every reader of shard rows
    goes through here (``batches``, and any task that reads shards elsewhere, e.g. on Ray):
    ``record`` needs the columns path, resolved, label, error and embedding, and ``labels`` when
    ``multi_label`` (each row's label set, checked by ``_label_sets``; ``label`` is then unused)."""
    keep = np.flatnonzero(mask)
    picked = _taken(record, keep)
    errors = picked.column("error").to_pylist()
    path_column, resolved_column = picked.column("path"), picked.column("resolved")
    paths, keys = path_column.to_pylist(), resolved_column.to_pylist()
    for i in np.flatnonzero(_nulls(path_column) | _nulls(resolved_column)).tolist():  # none in a sound shard
        path, resolved = paths[i], keys[i]
        paths[i] = path if path is not None else resolved if resolved is not None else \
            f"<{shard} row {offset + int(keep[i])}>"
        keys[i] = resolved if resolved is not None else paths[i]
        errors[i] = _damage(shard, offset + int(keep[i]), f"no {'path' if path is None else 'resolved path'}")
    labels = [-1] * len(keep)  # no classes: the labels mean nothing and are not used
    classes = classnames
    label_sets = None
    if multi_label and classes is not None:
        label_sets = _label_sets(picked.column("labels"), len(classes), errors, lambda i, problem: _damage(
            shard, offset + int(keep[i]), problem))
    elif classes is not None:
        column = picked.column("label")
        missing = _nulls(column)
        numbers = np.asarray(column.fill_null(0), dtype=np.int64)
        known = ~missing & (numbers >= 0) & (numbers < len(classes))
        labels = np.where(known, numbers, -1).tolist()
        for i in np.flatnonzero(~known).tolist():
            if errors[i] is None:
                errors[i] = _damage(shard, offset + int(keep[i]), "no label" if missing[i] else
                                    f"label {int(numbers[i])} is not one of the store's {len(classes)} classes")
    embeddings = _embeddings(picked.column("embedding"), embed_dim, errors, lambda i, problem: _damage(
        shard, offset + int(keep[i]), problem))
    spans = None
    names = picked.column_names if hasattr(picked, "column_names") else picked.schema.names
    if all(name in names for name in SPAN_COLUMNS):
        spans = [None if start is None or end is None else (float(start), float(end)) for start, end in
                 zip(picked.column("start").to_pylist(), picked.column("end").to_pylist(), strict=True)]
    return StoreBatch(paths, errors, labels, embeddings, label_sets, spans, keys)


def _label_sets(column: pa.Array, count: int, errors: list[str | None], damage) -> list[tuple[int, ...]]:
    """Each row's label indices as a sorted tuple (empty = none of the labels). A row whose list is
    missing, longer than the ``count`` classes, holds a null, or names an index outside the classes
    gets ``damage(i, problem)`` as its error (when it has none yet) and an empty set. Lengths are
    checked before any list is converted, so no allocation depends on a value in the file."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    sets: list[tuple[int, ...]] = [()] * len(column)
    problems: dict[int, str] = {}
    valid = ~_nulls(column)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    for i in np.flatnonzero(~valid):
        problems[int(i)] = "no labels"
    for i in np.flatnonzero(valid & (lengths > count)):
        problems[int(i)] = f"{int(lengths[i])} labels, the store has {count} classes"
    rows = np.flatnonzero(valid & (lengths <= count))
    picked = column.take(pa.array(rows, type=pa.int64()))
    flat = pc.list_flatten(picked)
    nulls = flat.is_null().to_numpy(zero_copy_only=False)
    values = flat.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    for j, chunk in enumerate(np.split(np.arange(len(values)), np.cumsum(lengths[rows])[:-1]) if len(rows) else []):
        row = int(rows[j])
        outside = chunk[(values[chunk] < 0) | (values[chunk] >= count)]
        if nulls[chunk].any():
            problems[row] = "a null label"
        elif len(outside):
            problems[row] = f"label {int(values[outside[0]])} is not one of the store's {count} classes"
        else:
            sets[row] = tuple(sorted(set(values[chunk].tolist())))
    for i, problem in problems.items():
        if errors[i] is None:
            errors[i] = damage(i, problem)
    return sets


def _embeddings(column: pa.Array, dim: int, errors: list[str | None], damage) -> np.ndarray:
    """The float32 [n_ok, D] embeddings of the rows whose error is None, in order; the rows
    whose embedding is unusable get ``damage(i, problem)`` as their error (in ``errors``).
    Either layout (``store.format``): a packed column's values are read from its buffer in place."""
    if errors.count(None) == len(errors):
        candidates = np.arange(len(errors))
    else:
        candidates = np.array([i for i, error in enumerate(errors) if error is None], dtype=np.int64)
    if not len(candidates):
        return np.empty((0, dim), dtype=np.float32)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    vectors = _taken(column, candidates)
    usable = ~_nulls(vectors)
    lengths = np.full(len(candidates), dim)
    packed = pa.types.is_fixed_size_binary(vectors.type)
    if packed and vectors.type.byte_width not in (2 * dim, 4 * dim):  # neither float16 nor float32 values
        lengths[:] = -1
    elif not packed and not pa.types.is_fixed_size_list(vectors.type):  # other writers' lists: lengths vary
        lengths = pc.list_value_length(vectors).fill_null(0).to_numpy(zero_copy_only=False)
    for j in np.flatnonzero(~usable):
        errors[candidates[j]] = damage(candidates[j], "no embedding")
    for j in np.flatnonzero(usable & (lengths != dim)):
        errors[candidates[j]] = damage(candidates[j], f"embedding of {vectors.type.byte_width} bytes is not {dim} "
                                       "float16 or float32 values" if packed else
                                       f"embedding has {int(lengths[j])} values, the store's width is {dim}")
    usable &= lengths == dim
    rows = np.flatnonzero(usable)
    squares = None  # each row's sum of squares, when made while widening
    if packed and not len(rows):  # none usable, perhaps none of the width: nothing to read from the buffer
        values = np.empty((0, dim), dtype=np.float32)
    elif packed:
        width = vectors.type.byte_width
        stored = np.frombuffer(vectors.buffers()[1], dtype=f"<f{width // dim}", count=len(vectors) * dim,
                               offset=vectors.offset * width).reshape(len(vectors), dim)
        values, squares = rows_widened(stored if len(rows) == len(vectors) else stored[rows])
    else:
        values = _taken(vectors, rows).flatten().to_numpy(zero_copy_only=False)  # flatten: a slice's own values
        values = widened(values).reshape(len(rows), dim)
    usable_rows, problems, values = _checked(values, squares)
    for j, problem in problems.items():
        errors[candidates[rows[j]]] = damage(candidates[rows[j]], problem)
    return values if not problems else values[usable_rows]


def _release_arrow_memory() -> None:
    """Give the pages Arrow's allocator holds free back to the system, after each record batch read. A batch is
    decoded on whichever thread reads it (``classify_store_arrays`` reads on the top-k's two threads), and
    Arrow's default allocator (mimalloc) keeps each thread's freed pages for reuse: without this the peak RSS of
    a store's classification grew by ~20 MB between 50,000 and 200,000 rows before it levelled off, and varied
    by as much between runs; with it, flat (``tests/test_store_compact.py``'s memory test). It costs
    microseconds a batch."""
    pa.default_memory_pool().release_unused()


def _nulls(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which rows of ``column`` are null, as a numpy bool array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not column.null_count:
        return np.zeros(len(column), dtype=bool)
    return column.is_null().to_numpy(zero_copy_only=False)


def checked_vectors(values: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """(per row of float32 [n, D] embeddings: None when usable, else what is wrong; the rows with
    unit length). A row with a NaN or infinite value or of length zero is unusable (its scores
    would be NaN); a row whose length is not 1 within ``NORM_TOLERANCE`` is scaled to length 1
    (rows within it are kept bit for bit), so every score of a usable row is finite and bounded."""
    _, problems, values = _checked(values)
    return [problems.get(i) for i in range(len(values))], values


def _checked(values: np.ndarray, squares: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """``checked_vectors`` as (usable rows mask, {row: problem} of the others, the rows with unit length): one
    pass for the lengths (none where ``squares``, each row's float32 sum of squares, came with the rows), none
    per row in Python unless a row is wrong."""
    with np.errstate(all="ignore"):
        if squares is None:
            squares = np.einsum("ij,ij->i", values, values)  # float32: three times faster than float64
        norms = np.sqrt(squares)
        unsure = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE / 2)  # far from the line, or not finite in float32
        if unsure.any():  # these decided in float64 (no overflow, no underflow), as every row was before
            norms = norms.astype(np.float64)
            norms[unsure] = np.sqrt(np.einsum("ij,ij->i", values[unsure], values[unsure], dtype=np.float64))
        finite = np.isfinite(norms)  # a NaN or infinite value makes the sum of squares NaN or infinite
        usable = finite & (norms > 0)
        off = usable & (np.abs(norms - 1.0) > NORM_TOLERANCE)
        if off.any():
            if not values.flags.writeable:  # a read-only memory map
                values = values.copy()
            values[off] = (values[off] / norms[off, None]).astype(np.float32)
    problems = {i: "embedding has NaN or infinite values" if not finite[i] else "embedding is all zeros"
                for i in np.flatnonzero(~usable).tolist()}
    return usable, problems, values


def model_name(encoder) -> str:
    """The name a store records for ``encoder``: what ``load_model`` takes back. A transformers
    model keeps its ``transformers:`` prefix, and a local model folder is recorded absolute (the
    store is opened from other working directories)."""
    name = str(encoder.name)
    if getattr(encoder, "backend", None) == "transformers" and not name.startswith(TRANSFORMERS_PREFIX):
        name = TRANSFORMERS_PREFIX + name
    for prefix in (TRANSFORMERS_PREFIX, "local-dir:"):
        rest = name.removeprefix(prefix)
        if name.startswith(prefix) and not os.path.isabs(os.path.expanduser(rest)) and os.path.isdir(rest):
            return prefix + os.path.abspath(rest)
    return name


def sampling_mismatch(folder, held: dict | None, asked: dict, reembed: bool = False) -> str | None:
    """Why video clips sampled with ``asked`` cannot be added to a store whose clips were sampled with
    ``held`` (one line with both settings and the fix), or None. Clips of other settings would sit
    beside the old ones (other spans, other frame counts) while unchanged videos kept theirs."""
    from ..data.video import describe_sampling

    if held is None or reembed:
        return None
    settings = {key: value for key, value in held.items() if key != "unfinished"}
    if held.get("unfinished"):
        return (f"store {folder}: a re-embed of its videos with {describe_sampling(settings)} did not finish: "
                f"run it again (add --reembed with those settings), or embed into a new store path")
    if settings != asked:
        return (f"store {folder} holds video clips sampled with {describe_sampling(settings)}, not "
                f"{describe_sampling(asked)}: embed into a new store path (--output), or add --reembed to embed "
                "its videos again with the new settings")
    return None


def same_model(given: str, recorded: str) -> bool:
    """Whether a model name (``--model``) names the model a store records: the same text, or the
    same local folder, or the same open_clip name written with / for -."""
    def key(name: str) -> str:
        name = name.strip()
        for prefix in (TRANSFORMERS_PREFIX, "local-dir:"):
            rest = os.path.expanduser(name.removeprefix(prefix))
            if name.startswith(prefix) and os.path.isdir(rest):
                return prefix + os.path.realpath(rest)
        return name if ":" in name else name.replace("/", "-")

    return given == recorded or key(given) == key(recorded)


def _damage(shard: str, row: int, problem: str) -> str:
    return f"store shard {shard}, row {row}: {problem}"


def _warn_unreadable(name: str, error: Exception) -> None:
    import warnings

    from ..errors import ZsclipWarning

    warnings.warn(f"store shard {name} cannot be read ({error}); skipping it", ZsclipWarning, stacklevel=4)


__all__ = ["EmbeddingStore", "StoreBatch", "StoreError", "checked_batch", "checked_vectors", "model_name",
           "packed_column", "sampling_mismatch", "same_model"]
