"""``EmbeddingStore``: open, create, append to and stream an embedding store (see format.py).

Reading streams shard by shard in record batches, so classify / eval / search over a store of any
size hold one batch of embeddings at a time (plus one small entry per path for the view).
Writing appends whole shards: each is written under a temporary name, renamed, then listed in the
manifest, which is replaced atomically; that is what makes a killed ``zsclip embed`` resumable.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import __version__
from ..errors import ClassifierFileError
from .format import DTYPES, FORMAT, MANIFEST, VERSION, StoreError, read_manifest, schema
from .location import Location

#: What ``batches`` reads by default (everything but the file facts).
#: Rows per Parquet row group: the unit a reader decodes at once (4096 x 768 float16 = 6 MB).
ROW_GROUP_ROWS = 4096
READ_COLUMNS = ("path", "resolved", "label", "error", "deleted", "embedding")


@dataclass
class StoreBatch:
    """Rows of the store's view: paths, errors (None = has an embedding), labels (-1 = none), and
    the float32 embeddings [n_ok, D] of the rows without an error, in row order."""

    paths: list[str]
    errors: list[str | None]
    labels: list[int]
    embeddings: np.ndarray


class EmbeddingStore:
    """A folder of Parquet shards plus a manifest; see ``zsclip.store.format`` for the layout."""

    def __init__(self, folder: Location | Path, manifest: dict) -> None:
        self.location = folder if isinstance(folder, Location) else Location(folder)
        self.folder = self.location.local if self.location.local is not None else self.location
        self.manifest = manifest
        self._masks: dict[int, np.ndarray] | None = None  # the view, computed once per manifest state

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, model: str | None = None) -> EmbeddingStore:
        """A store made by ``zsclip embed``, or clip-retrieval's output folder (``img_emb/`` +
        ``metadata/``), which needs the ``model`` that made it (clip-retrieval does not record it)."""
        location = Location(path)
        if location.local is not None and (location.local / "img_emb").is_dir() and not location.exists(MANIFEST):
            from .clip_retrieval import open_clip_retrieval

            return open_clip_retrieval(location.local, model)
        return cls(location, read_manifest(location))

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, encoder, *, precision: str, dtype: str = "float16",
                       classnames: list[str] | None = None) -> EmbeddingStore:
        """The store at ``path`` for adding ``encoder``'s embeddings: opened (and checked to be the
        same model, dtype and classes) when it exists, else created empty."""
        folder = Location(path)
        if dtype not in DTYPES:
            raise StoreError(f"storage dtype {dtype!r}: use float16 (half the disk) or float32 (exact)")
        if folder.exists(MANIFEST):
            store = cls(folder, read_manifest(folder))
            store.check_encoder(encoder)
            if store.dtype != dtype:
                raise StoreError(f"store {folder} holds {store.dtype} embeddings, not {dtype}: use another --output")
            if (store.classnames or None) != (classnames or None):
                raise StoreError(f"store {folder} was made with other class labels: use another --output")
            return store
        if folder.exists() and (not folder.is_dir() or folder.names()):
            raise StoreError(f"{folder} exists and is not a zsclip store: give a new folder name for --output")
        folder.mkdir()
        from ..pipeline.device_decode import device_preprocessing

        preprocessing = device_preprocessing(encoder.image_transform())
        manifest = {
            "format": FORMAT, "version": VERSION, "zsclip_version": __version__,
            "model": encoder.name, "pretrained": getattr(encoder, "pretrained", None),
            "fingerprint": encoder.fingerprint, "backend": encoder.backend, "embed_dim": int(encoder.embed_dim),
            "precision": precision, "dtype": dtype, "logit_scale": float(encoder.logit_scale),
            "logit_bias": encoder.logit_bias,
            "preprocessing": None if preprocessing is None else {
                "size": preprocessing.size, "crop": list(preprocessing.crop), "resize": preprocessing.interpolation,
                "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
            "classnames": classnames, "shards": [],
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
        return self.manifest.get("model") or ""

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
    def shard_files(self) -> list[Path | str]:
        """The committed shards: Paths for a local store, URIs for a remote one."""
        return [self.location.path_of(shard["file"]) for shard in self.manifest["shards"]]

    def check_encoder(self, encoder) -> None:
        """Refuse a model other than the one the embeddings came from (they would not match)."""
        if int(encoder.embed_dim) != self.embed_dim:
            raise StoreError(f"store {self.folder} holds {self.embed_dim}-d embeddings, but model {encoder.name} makes "
                             f"{int(encoder.embed_dim)}-d ones: use the model that made the store")
        if self.fingerprint and self.fingerprint != encoder.fingerprint and encoder.name == self.model:
            raise StoreError(f"store {self.folder} holds embeddings of {self.model} with other weights "
                             f"({self.pretrained or 'unnamed'}, {self.fingerprint}) than the ones loaded "
                             f"({encoder.fingerprint}): load the same weights, or embed into another store")
        if self.fingerprint and self.fingerprint != encoder.fingerprint:
            raise StoreError(f"store {self.folder} holds embeddings of model {self.model} ({self.fingerprint}), not "
                             f"{encoder.name} ({encoder.fingerprint}): use --model {self.model}, or embed again")

    def check_classifier(self, classifier) -> None:
        """Refuse a classifier built for another model than the store's."""
        width = int(classifier.weights.shape[0])
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
        that row is a deletion. Computed by Arrow over the path column alone (a hash aggregate in
        native memory): the embeddings are never read for it. Computed once per state of the
        manifest (``append`` resets it), so an unreadable shard is reported once."""
        if self._masks is None:
            self._masks = self._compute_view()
        return self._masks

    def _compute_view(self) -> dict[int, np.ndarray]:
        tables = list(self._tables(("resolved", "deleted")))
        if not tables:
            return {}
        sizes = [table.num_rows for _, table in tables]
        resolved = pa.concat_arrays([table.column("resolved").combine_chunks() for _, table in tables])
        deleted = np.concatenate([table.column("deleted").to_numpy(zero_copy_only=False).astype(bool)
                                  for _, table in tables])
        order = pa.array(np.arange(len(resolved), dtype=np.int64))
        latest = pa.table({"resolved": resolved, "order": order}).group_by("resolved").aggregate([("order", "max")])
        keep = np.zeros(len(resolved), dtype=bool)
        keep[latest.column("order_max").to_numpy()] = True
        keep &= ~deleted
        offsets = np.cumsum([0, *sizes])
        return {index: keep[offsets[n] : offsets[n + 1]] for n, (index, _) in enumerate(tables)}

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
                out[key] = (size, mtime)
        return out

    def __len__(self) -> int:
        return int(sum(mask.sum() for mask in self.view_masks().values()))

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
                for record in reader.iter_batches(batch_size=batch_size, columns=list(READ_COLUMNS)):
                    yield self._batch(record, masks[shard_index][offset : offset + record.num_rows])
                    offset += record.num_rows
            except (OSError, pa.ArrowException, ShardError) as error:
                _warn_unreadable(shard["file"], error)

    def _batch(self, record: pa.RecordBatch, mask: np.ndarray) -> StoreBatch:
        keep = np.flatnonzero(mask).tolist()
        paths = record.column("path").to_pylist()
        errors = record.column("error").to_pylist()
        labels = record.column("label").to_pylist()
        good = [i for i in keep if errors[i] is None]
        embeddings = np.empty((0, self.embed_dim), dtype=np.float32)
        if good:
            column = record.column("embedding").take(pa.array(good))
            embeddings = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(good), -1)
        return StoreBatch([paths[i] for i in keep], [errors[i] for i in keep],
                          [-1 if labels[i] is None else int(labels[i]) for i in keep], embeddings)

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
        expected = schema(self.embed_dim, self.dtype)
        for field in expected:
            index = found.get_field_index(field.name)
            if index < 0:
                raise ShardError(f"no column {field.name!r}")
            if not _same_type(found.field(index).type, field.type):
                raise ShardError(f"column {field.name!r} is {found.field(index).type}, the store's is {field.type}")

    # --- writing -----------------------------------------------------------------------------
    def append(self, rows: list[dict], embeddings: list[np.ndarray | None]) -> Path:
        """Commit one shard: ``rows`` (the schema's columns but the embedding) and each row's
        embedding (None for error and deleted rows). The shard counts once the manifest lists it."""
        dim, dtype = self.embed_dim, self.dtype
        numpy_dtype = np.float16 if dtype == "float16" else np.float32
        columns = {name: [row.get(name) for row in rows] for name in schema(dim, dtype).names if name != "embedding"}
        flat = [None if e is None else np.asarray(e, dtype=numpy_dtype).reshape(-1) for e in embeddings]
        vectors = pa.array([None if e is None else e for e in flat], type=pa.list_(DTYPES[dtype], dim))
        table = pa.table({**columns, "embedding": vectors}, schema=schema(dim, dtype))
        name = f"shard-{len(self.manifest['shards']):05d}-{uuid.uuid4().hex[:8]}.parquet"
        self.location.write_table(name, table, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        self.manifest["shards"].append({"file": name, "rows": len(rows)})
        self._write_manifest()
        self._masks = None
        return self.location.path_of(name)

    def remove_leftovers(self) -> list[Path]:
        """Delete what a killed run left behind: shard files the manifest does not list (renamed
        but not yet committed), and the temporary files of an unfinished shard or manifest write
        (``.shard-*.partial``, ``.zsclip-store.json.*.partial``: a SIGKILL skips their clean-up).
        Called under the write lock, so no live writer owns them."""
        listed = {shard["file"] for shard in self.manifest["shards"]}
        removed = []
        for name in self.location.names():
            uncommitted = name.startswith("shard-") and name.endswith(".parquet") and name not in listed
            unfinished = name.startswith((".shard-", f".{MANIFEST}.")) and name.endswith(".partial")
            if uncommitted or unfinished:
                self.location.delete(name)
                removed.append(self.location.path_of(name))
        return removed

    @contextlib.contextmanager
    def writing(self) -> Iterator[EmbeddingStore]:
        """Hold the store's write lock: two writers on one store would interleave their manifests."""
        with self.location.lock():
            self.remove_leftovers()
            yield self

    def _write_manifest(self) -> None:
        self.manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.location.write_text(MANIFEST, json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n")

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.folder)!r}, model={self.model!r}, shards={len(self.manifest['shards'])})"


class ShardError(ValueError):
    """A shard file that is readable Parquet but not a shard of this store."""


def _same_type(found: pa.DataType, expected: pa.DataType) -> bool:
    """Type equality that ignores a list's item name and nullability (writers differ on both)."""
    if pa.types.is_fixed_size_list(expected):
        return (pa.types.is_fixed_size_list(found) and found.list_size == expected.list_size
                and found.value_type.equals(expected.value_type))
    return found.equals(expected)


def _warn_unreadable(name: str, error: Exception) -> None:
    import warnings

    from ..errors import ZsclipWarning

    warnings.warn(f"store shard {name} cannot be read ({error}); skipping it", ZsclipWarning, stacklevel=4)


__all__ = ["EmbeddingStore", "StoreBatch", "StoreError"]
