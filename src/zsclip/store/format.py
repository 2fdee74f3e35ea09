"""The embedding store's on-disk format: a folder of Parquet shards plus one JSON manifest.

    photos.zse/
      zsclip-store.json        the manifest: format version, model, fingerprint, preprocessing,
                               precision, storage dtype, class names, and the committed shards
      shard-00000-<id>.parquet one row per image: path, resolved, size, mtime_ns, sha256, width,
      shard-00001-<id>.parquet height, label, error, deleted, embedding (float16 or float32, packed);
                               a multi-label store adds ``labels`` (each image's label indices)

The manifest is the commit point: a shard exists for readers only once the manifest lists it,
and the manifest is replaced atomically after the shard is in place. A run killed at any moment
leaves either the old manifest or the new one, never a half-listed shard; files the manifest does
not list are leftovers and are ignored (and removed by the next writer).

Rows are appended, never rewritten: the store's view of a path is its latest row. A changed file
gets a new row; a file that is gone when ``zsclip embed`` runs again gets a ``deleted`` row, which
drops it from the view (its old rows stay in older shards until ``zsclip compact`` rewrites them).

A shard entry may say ``"new_paths": true``: none of its rows replaces or deletes a path the view
held before it, and no path appears twice in it (its writer checked, under the lock, against the
view; every shard ``zsclip compact`` writes or keeps is one). Readers then need none of its paths to
compute the view, unless a later unmarked shard holds some, which is what keeps opening a store flat
in memory; older readers ignore the field and compute the same view from the paths.

Durability: each shard is synced to disk before its rename and the folder after it, and the
manifest's folder is synced before and after the manifest's rename (``location.py``), so after a
power loss the manifest on disk lists only shards that are on disk.

A store holding video clips records how they were sampled (``"video_sampling": {"frames", "segment",
"max_frames"}``): clips of other settings are other rows, so ``embed`` refuses to add videos with other
settings unless asked to re-embed them all (``--reembed``); older readers ignore the field.

Version 3 packs the embeddings: a store made by this zsclip writes each row's embedding as one
fixed-size binary value (``embedding_layout: "packed"`` in the manifest; the D values in the store's
dtype, little-endian, row after row: ``np.frombuffer(value, "<f2")`` for float16), uncompressed. Parquet
stores float16 as a 2-byte value with a definition level each, which pyarrow decodes one value at a
time: 3.6 s per million 512-d rows, against 0.15 s for the packed column, where reading is a copy
(docs/round4-store.md), for a file 9% larger (zstd gains little on float mantissas). A store made
before keeps writing lists, so the zsclip that made it still reads it; readers take both layouts.

Version 2 adds multi-label stores (``"multi_label": true`` in the manifest, embedded from a manifest
whose ``labels`` hold several names): their shards have a ``labels`` column (a list of class indices
per row, empty = none of the labels) and a null ``label``. Before version 3 every other store was written
as version 1, so older zsclip versions kept reading it; a multi-label store is refused by them with
"upgrade zsclip" rather than read as rows without labels, and so is a version 3 store. A store keeps the
version it was made with (``written_version``).
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

from ..errors import InputError

MANIFEST = "zsclip-store.json"
FORMAT = "zsclip-store"
VERSION = 3
#: The version written for a store without label sets (what zsclip before multi-label stores reads).
SINGLE_LABEL_VERSION = 1
#: The version of a multi-label store in lists (what zsclip before packed embeddings reads).
MULTI_LABEL_VERSION = 2
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
#: each stored dtype as numpy reads a packed embedding's bytes (little-endian whatever the machine)
PACKED_DTYPES = {"float16": "<f2", "float32": "<f4"}
#: the manifest field and value of a store whose shards pack each embedding into one binary value
LAYOUT_FIELD, PACKED = "embedding_layout", "packed"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_EMBED_DIM = 65536
#: The longest model name, tag or class name a manifest may hold.
MAX_TEXT_CHARS = 4096


class StoreError(InputError):
    """A store that cannot be used: not a store, a newer format, empty, damaged, another model."""


def written_version(multi_label: bool, packed: bool) -> int:
    """The oldest format version that describes a store: what the most zsclip versions read."""
    return VERSION if packed else MULTI_LABEL_VERSION if multi_label else SINGLE_LABEL_VERSION


def embedding_type(dim: int, dtype: str, packed: bool) -> pa.DataType:
    """The embedding column's type: D values of ``dtype`` packed into one binary value, or a list of them."""
    return pa.binary(dim * DTYPES[dtype].byte_width) if packed else pa.list_(DTYPES[dtype], dim)


def schema(dim: int, dtype: str, multi_label: bool = False, packed: bool = False) -> pa.Schema:
    """The columns of every shard of a store of ``dim``-dimensional embeddings stored as ``dtype``
    (with ``labels``, each image's label indices, in a multi-label store; ``packed``: see the module)."""
    fields = [
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
        ("embedding", embedding_type(dim, dtype, packed)),
    ]
    if multi_label:
        fields.append(("labels", pa.list_(pa.int32())))  # class indices of every label of the image
    return pa.schema(fields)


def shard_write_options(schema: pa.Schema) -> dict:
    """Parquet writer options for a shard: zstd, and dictionary encoding for every column but the embedding.
    float16 has only 65,536 values, so Parquet's writer keeps a dictionary for a list embedding column and
    every reader then decodes 16-bit indices: four times slower to read (1.55 s against 0.41 s per 100,000
    512-d rows, docs/round4-index.md) for no smaller file. A packed embedding column is not compressed (zstd
    takes 9% off and costs reading it seven times over). Readers take every encoding, so older shards stay
    readable."""
    dictionary = [field.name for field in schema if field.name != "embedding"]
    if not pa.types.is_fixed_size_binary(schema.field("embedding").type):
        return {"compression": "zstd", "use_dictionary": dictionary}
    return {"compression": {_leaf(field): "none" if field.name == "embedding" else "zstd" for field in schema},
            "use_dictionary": dictionary}


def _leaf(field: pa.Field) -> str:
    """The Parquet column path of a top-level field as pyarrow writes it (a list's values are its leaf)."""
    return f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name


def read_manifest(folder) -> dict:
    """The validated manifest of the store at ``folder`` (a ``Location``; one-line StoreError otherwise)."""
    path = folder.path_of(MANIFEST)
    if not folder.exists():
        raise StoreError(f"no such store: {folder} (a store is a folder made by `zsclip embed`)")
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
    """What is wrong with a parsed manifest (one line naming the field), or None. Every field a
    reader uses is checked for type and range here, so nothing later trusts a value from the file."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "not a zsclip store manifest"
    version = manifest.get("version")
    if not _is_int(version) or version < 1:
        return f"field 'version' is {_shown(version)}, not a format version"
    if version > VERSION:
        return (f"format version {version} is newer than this zsclip reads ({VERSION}): upgrade zsclip "
                "(pip install -U zsclip)")
    layout = manifest.get(LAYOUT_FIELD)
    if layout not in (None, PACKED):
        return f"field {LAYOUT_FIELD!r} is {_shown(layout)}, not {PACKED!r}"
    dtype = manifest.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return f"field 'dtype' is {_shown(dtype)}, not one of {', '.join(DTYPES)}"
    dim = manifest.get("embed_dim")
    if not _is_int(dim) or not 0 < dim <= MAX_EMBED_DIM:
        return f"field 'embed_dim' is {_shown(dim)}, not an embedding width (1 to {MAX_EMBED_DIM})"
    model = manifest.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_TEXT_CHARS:
        return f"field 'model' is {_shown(model)}, not a model name"
    for field in ("pretrained", "fingerprint", "backend", "precision"):
        value = manifest.get(field)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS):
            return f"field {field!r} is {_shown(value)}, not text"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return f"field 'shards' is {_shown(shards)}, not a list of shards"
    seen: set[str] = set()
    for index, shard in enumerate(shards):
        if not isinstance(shard, dict):
            return f"shards[{index}] is {_shown(shard)}, not a shard entry"
        name = shard.get("file")
        if not (isinstance(name, str) and _plain_name(name)):
            return f"shards[{index}].file is {_shown(name)}, not a file name in the store folder"
        if name in seen:
            return f"shards[{index}].file {name!r} is listed twice"
        seen.add(name)
        rows = shard.get("rows")
        if not _is_int(rows) or rows < 0:
            return f"shards[{index}].rows is {_shown(rows)}, not a row count"
        if not isinstance(shard.get("new_paths", False), bool):
            return f"shards[{index}].new_paths is {_shown(shard.get('new_paths'))}, not true or false"
    classnames = manifest.get("classnames")
    if classnames is not None:
        if not isinstance(classnames, list):
            return f"field 'classnames' is {_shown(classnames)}, not a list of class names"
        for index, name in enumerate(classnames):
            if not isinstance(name, str) or len(name) > MAX_TEXT_CHARS:
                return f"classnames[{index}] is {_shown(name)}, not a class name"
    scale = manifest.get("logit_scale")
    if scale is not None and not (_is_number(scale) and math.isfinite(scale) and scale > 0):
        return f"field 'logit_scale' is {_shown(scale)}, not a positive number"
    bias = manifest.get("logit_bias")
    if bias is not None and not (_is_number(bias) and math.isfinite(bias)):
        return f"field 'logit_bias' is {_shown(bias)}, not a number"
    multi_label = manifest.get("multi_label")
    if multi_label is not None and not isinstance(multi_label, bool):
        return f"field 'multi_label' is {_shown(multi_label)}, not true or false"
    if multi_label and classnames is None:
        return "field 'multi_label' is true but there is no 'classnames': label sets index class names"
    preprocessing = manifest.get("preprocessing")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        return f"field 'preprocessing' is {_shown(preprocessing)}, not a table of settings"
    return _sampling_problem(manifest.get("video_sampling"))


def _sampling_problem(sampling: object) -> str | None:
    """``video_sampling``: how the store's video clips were sampled (``frames``, ``segment``, ``max_frames``;
    ``unfinished`` while a re-embed with them is under way)."""
    if sampling is None:
        return None
    if not isinstance(sampling, dict):
        return f"field 'video_sampling' is {_shown(sampling)}, not a table of settings"
    for field in ("frames", "max_frames"):
        value = sampling.get(field)
        if not _is_int(value) or value < 1:
            return f"video_sampling.{field} is {_shown(value)}, not a whole number >= 1"
    segment = sampling.get("segment")
    if segment is not None and not (_is_number(segment) and math.isfinite(segment) and segment > 0):
        return f"video_sampling.segment is {_shown(segment)}, not seconds > 0"
    if not isinstance(sampling.get("unfinished", False), bool):
        return f"video_sampling.unfinished is {_shown(sampling.get('unfinished'))}, not true or false"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_name(name: str) -> bool:
    """A file directly in the store folder: no separators, no parent, no control characters."""
    return (0 < len(name) <= 255 and name not in (".", "..") and not set(name) & {"/", "\\", "\0"}
            and name.isprintable())


def _shown(value: object) -> str:
    """A value from the file for an error line: its repr, kept short (the file may hold anything)."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["DTYPES", "FORMAT", "LAYOUT_FIELD", "MANIFEST", "MULTI_LABEL_VERSION", "PACKED", "PACKED_DTYPES",
           "SINGLE_LABEL_VERSION", "StoreError", "VERSION", "embedding_type", "read_manifest", "schema",
           "written_version"]
