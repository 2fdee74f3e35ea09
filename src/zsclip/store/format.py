"""The embedding store's on-disk format: a folder of Parquet shards plus one JSON manifest.

    photos.zse/
      zsclip-store.json        the manifest: format version, model, fingerprint, preprocessing,
                               precision, storage dtype, class names, and the committed shards
      shard-00000-<id>.parquet one row per image: path, resolved, size, mtime_ns, sha256, width,
      shard-00001-<id>.parquet height, label, error, deleted, embedding (float16 or float32 list)

The manifest is the commit point: a shard exists for readers only once the manifest lists it,
and the manifest is replaced atomically after the shard is in place. A run killed at any moment
leaves either the old manifest or the new one, never a half-listed shard; files the manifest does
not list are leftovers and are ignored (and removed by the next writer).

Rows are appended, never rewritten: the store's view of a path is its latest row. A changed file
gets a new row; a file that is gone when ``zsclip embed`` runs again gets a ``deleted`` row, which
drops it from the view (its old rows stay in older shards until the store is rebuilt).
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

from ..errors import InputError

MANIFEST = "zsclip-store.json"
FORMAT = "zsclip-store"
VERSION = 1
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class StoreError(InputError):
    """A store that cannot be used: not a store, a newer format, empty, damaged, another model."""


def schema(dim: int, dtype: str) -> pa.Schema:
    """The columns of every shard of a store of ``dim``-dimensional embeddings stored as ``dtype``."""
    return pa.schema([
        ("path", pa.string()),          # as the user gave it
        ("resolved", pa.string()),      # absolute, links resolved: the row's identity
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("label", pa.int32()),          # class index when embedded from a labelled collection
        ("error", pa.string()),         # why the image has no embedding (recorded, never dropped)
        ("deleted", pa.bool_()),        # a tombstone: the file is gone, drop it from the view
        ("embedding", pa.list_(DTYPES[dtype], dim)),
    ])


def read_manifest(folder) -> dict:
    """The validated manifest of the store at ``folder`` (a ``Location``; one-line StoreError otherwise)."""
    path = folder.path_of(MANIFEST)
    if not folder.is_dir():
        raise StoreError(f"{folder} is not a folder: a store is a folder made by `zsclip embed`")
    if not folder.exists(MANIFEST):
        raise StoreError(f"{folder} is not a zsclip store (no {MANIFEST}): make one with `zsclip embed IMAGES "
                         f"--output {folder}`")
    try:
        manifest = json.loads(folder.read_text(MANIFEST, MAX_MANIFEST_BYTES))
    except (OSError, ValueError, RecursionError) as error:
        raise StoreError(f"store manifest {path} cannot be read ({error}): the store is damaged") from None
    problem = _problem(manifest)
    if problem:
        raise StoreError(f"store manifest {path}: {problem}")
    return manifest


def _problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "not a zsclip store manifest"
    version = manifest.get("version")
    if not isinstance(version, int):
        return "no format version"
    if version > VERSION:
        return (f"format version {version} is newer than this zsclip reads ({VERSION}): upgrade zsclip "
                "(pip install -U zsclip)")
    if manifest.get("dtype") not in DTYPES:
        return f"unknown storage dtype {manifest.get('dtype')!r}"
    dim = manifest.get("embed_dim")
    if not isinstance(dim, int) or not 0 < dim <= 65536:
        return f"bad embedding width {dim!r}"
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str)
                                               and "/" not in s["file"] and isinstance(s.get("rows"), int)
                                               for s in shards):
        return "bad shard list"
    classnames = manifest.get("classnames")
    if classnames is not None and not (isinstance(classnames, list) and all(isinstance(c, str) for c in classnames)):
        return "bad class names"
    scale = manifest.get("logit_scale")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        return "bad logit scale"
    return None


__all__ = ["DTYPES", "FORMAT", "MANIFEST", "StoreError", "VERSION", "read_manifest", "schema"]
