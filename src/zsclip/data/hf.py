"""Hugging Face datasets on disk, read with pyarrow directly (no ``datasets`` library).

Three layouts, as ``datasets`` writes them:

- **Parquet** (what the Hub serves, ``data/train-00000-of-00003.parquet``): a file or a folder of them.
  The image column is the ``Image`` feature, a struct ``{bytes: binary, path: string}``; the label
  column a ``ClassLabel`` (an integer), whose class names are in the schema's metadata under the
  ``huggingface`` key (``{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}``).
- **save_to_disk** folders: ``data-00000-of-00001.arrow`` (Arrow IPC streams) with ``dataset_info.json``
  and ``state.json``; the same features, from ``dataset_info.json`` (or the schema's metadata).
- **imagefolder** with ``metadata.csv`` / ``metadata.jsonl`` (a ``file_name`` column): image files;
  labels from a ``label`` column, else from the class folder each file is in.

Why pyarrow and not ``datasets``: pyarrow is already here (the store is Parquet), reads both file kinds
as streams (Parquet row group by row group, Arrow IPC memory-mapped batch by batch, so a split is never
in memory whole), needs no cache folder (``datasets`` converts everything into its own Arrow cache
first, a full copy of the split) and pulls in no dependencies (``datasets`` brings fsspec, dill,
multiprocess, pandas and an HTTP client). The formats are documented and stable.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .collections import LabelledCollection, LabelledSource
from .textfiles import read_text_file

#: Rows read from a file at a time (a record batch); decoded images stay bounded by the batch size.
READ_ROWS = 256
LABEL_NAMES = ("label", "labels", "class", "fine_label")


@dataclass
class HFTable:
    """A Hugging Face split as Arrow data: its files, its image and label columns, its class names."""

    root: Path
    files: list[Path]
    kind: str  # "parquet" or "arrow"
    image_column: str
    label_column: str | None
    classnames: list[str] | None
    rows: int = 0
    parts: list[tuple[int, int | None]] = field(default_factory=list)  # (file index, row group or None)

    def name_of(self, file: int, row: int) -> str:
        try:
            relative = self.files[file].relative_to(self.root)
        except ValueError:
            relative = self.files[file]
        return f"{self.root / relative if self.root.is_dir() else self.files[file]}#{row}"


def hf_layout(path: str | os.PathLike) -> str | None:
    """'parquet', 'arrow' (save_to_disk), 'imagefolder' or 'dataset_dict' for a Hugging Face dataset on
    disk, else None."""
    path = Path(path)
    try:
        if path.is_file():
            return "parquet" if path.suffix.lower() == ".parquet" else None
        if not path.is_dir():
            return None
        if (path / "dataset_dict.json").is_file():
            return "dataset_dict"
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return "arrow"
        if any((path / name).is_file() for name in ("metadata.csv", "metadata.jsonl")):
            return "imagefolder"
        files = _parquet_files(path)
        if files and _has_image_column(files[0]):
            return "parquet"
    except OSError:
        return None
    return None


def _has_image_column(file: Path) -> bool:
    """A Parquet file written by ``datasets`` (its metadata) or holding a {bytes, path} image struct (not a
    zsclip store shard or a results file that happens to sit in a folder of images)."""
    import pyarrow as pa

    try:
        schema = _schema(file, "parquet")
    except InputError:
        return False
    return b"huggingface" in (schema.metadata or {}) or any(
        pa.types.is_struct(f.type) and {"bytes", "path"} <= {c.name for c in f.type} for f in schema)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))


def open_hf(path: str | os.PathLike, classes: Sequence[str] | None = None) -> HFTable | LabelledCollection:
    """The split at ``path``: an ``HFTable`` for Parquet / save_to_disk data, a ``LabelledCollection``
    (image files) for an imagefolder. ``classes``: class names for integer labels without a ClassLabel."""
    path = Path(path)
    layout = hf_layout(path)
    if layout == "dataset_dict":
        splits = json.loads(read_text_file(path / "dataset_dict.json", "dataset_dict.json")).get("splits", [])
        raise InputError(f"{path} holds several splits ({', '.join(map(str, splits))}): name one, e.g. "
                         f"{path / (splits[0] if splits else 'test')}")
    if layout == "imagefolder":
        return imagefolder(path, classes)
    if layout == "arrow":
        state = _json(path / "state.json")
        files = [path / entry["filename"] for entry in state.get("_data_files", []) if "filename" in entry]
        if not files:
            raise InputError(f"{path}/state.json lists no data files")
        features = _json(path / "dataset_info.json").get("features")
        return _table(path, files, "arrow", features, classes)
    if layout == "parquet":
        files = [path] if path.is_file() else _parquet_files(path)
        splits = {_split_of(f) for f in files} - {None}
        if len(splits) > 1:
            raise InputError(f"{path} holds several splits ({', '.join(sorted(splits))}): name one split's file or "
                             "folder")
        return _table(path, files, "parquet", None, classes)
    raise InputError(f"{path}: not a Hugging Face dataset (Parquet, save_to_disk or imagefolder with metadata)")


def _split_of(file: Path) -> str | None:
    stem = file.stem
    if "-of-" in stem and "-" in stem:
        return stem.split("-")[0]
    return None


def _json(path: Path) -> dict:
    try:
        value = json.loads(read_text_file(path, path.name))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object")
    return value


def _schema(file: Path, kind: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            return pq.ParquetFile(file).schema_arrow
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_stream(source).schema
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{file}: not readable as {kind} ({error})") from None


def _table(root: Path, files: list[Path], kind: str, features: dict | None,
           classes: Sequence[str] | None) -> HFTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(files[0], kind)
    if features is None:
        metadata = (schema.metadata or {}).get(b"huggingface")
        if metadata:
            try:
                features = json.loads(metadata).get("info", {}).get("features")
            except (json.JSONDecodeError, AttributeError):
                features = None
    features = features if isinstance(features, dict) else {}
    image = next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    if image is None:  # no features recorded: the first {bytes, path} struct column
        image = next((f.name for f in schema if pa.types.is_struct(f.type)
                      and {"bytes", "path"} <= {c.name for c in f.type}), None)
    if image is None or image not in schema.names:
        raise InputError(f"{files[0]}: no image column (an Image feature, a {{bytes, path}} struct)")
    label = next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"),
                 None)
    names = None
    if label is not None:
        names = [str(n).replace("_", " ") for n in features[label].get("names", [])]
    else:
        label = next((n for n in LABEL_NAMES if n in schema.names
                      and pa.types.is_integer(schema.field(n).type)), None)
    if classes is not None:
        names = list(classes)
    table = HFTable(root, files, kind, image, label, names if label is not None and names else None)
    for index, file in enumerate(files):
        if kind == "parquet":
            try:
                metadata = pq.ParquetFile(file).metadata
            except (OSError, pa.ArrowException) as error:
                raise InputError(f"{file}: not readable as Parquet ({error})") from None
            table.rows += metadata.num_rows
            table.parts += [(index, group) for group in range(metadata.num_row_groups)]
        else:
            table.parts.append((index, None))
    return table


def table_rows(table: HFTable, part: tuple[int, int | None]) -> Iterator[tuple[str, bytes | None, str | None,
                                                                              int, str | None]]:
    """(name, image bytes, image path, target, error) per row of one part (a Parquet row group or an
    Arrow file), read ``READ_ROWS`` at a time. A part that cannot be read ends with one error row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file_index, group = part
    file = table.files[file_index]
    columns = [table.image_column] + ([table.label_column] if table.label_column else [])
    row = 0
    if group is not None:
        metadata = pq.ParquetFile(file).metadata
        row = sum(metadata.row_group(g).num_rows for g in range(group))
    try:
        if table.kind == "parquet":
            batches = pq.ParquetFile(file).iter_batches(batch_size=READ_ROWS, row_groups=[group], columns=columns)
            yield from _rows(table, file_index, batches, row)
        else:
            with pa.memory_map(str(file)) as source:
                yield from _rows(table, file_index, pa.ipc.open_stream(source), row)
    except (OSError, pa.ArrowException) as error:
        yield table.name_of(file_index, row), None, None, -1, f"{file}: cannot be read further ({error})"


def _rows(table: HFTable, file_index: int, batches, row: int):
    count = len(table.classnames) if table.classnames else None
    for batch in batches:
        images = batch.column(table.image_column).to_pylist()
        labels = batch.column(table.label_column).to_pylist() if table.label_column else [None] * len(images)
        for image, label in zip(images, labels, strict=True):
            name = table.name_of(file_index, row)
            row += 1
            target, error = -1, None
            if count is not None:
                if isinstance(label, int) and 0 <= label < count:
                    target = label
                else:
                    error = f"label {label!r} is not a class index (0..{count - 1})"
            if not isinstance(image, dict) or not (image.get("bytes") or image.get("path")):
                yield name, None, None, target, error or "no image in this row"
                continue
            path = image.get("path")
            if path and not image.get("bytes") and not os.path.isabs(path):
                path = str(table.files[file_index].parent / path)
            yield name, image.get("bytes"), path, target, error


def imagefolder(folder: Path, classes: Sequence[str] | None = None) -> LabelledCollection:
    """An imagefolder with metadata files: every ``file_name`` row, labelled by a ``label`` column (class
    names sorted, or indices into ``classes``) or else by the folder it is in (none at the top level)."""
    rows: list[tuple[str, str | None, str | None]] = []  # (path, label, error)
    for metadata in sorted(list(folder.rglob("metadata.csv")) + list(folder.rglob("metadata.jsonl"))):
        text = read_text_file(metadata, metadata.name)
        if metadata.suffix == ".csv":
            records = list(csv.DictReader(io.StringIO(text, newline="")))
        else:
            records = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        records.append({"_error": f"{metadata}:{number}: not valid JSON ({error.msg})"})
        for record in records:
            if not isinstance(record, dict) or "_error" in record or not record.get("file_name"):
                problem = record.get("_error") if isinstance(record, dict) else None
                rows.append((str(metadata), None, problem or f"{metadata}: a row without file_name"))
                continue
            path = metadata.parent / str(record["file_name"])
            label = next((record[n] for n in LABEL_NAMES if record.get(n) not in (None, "")), None)
            if label is None:
                relative = path.relative_to(folder)
                label = relative.parts[-2] if len(relative.parts) > 1 and relative.parts[0] not in (
                    "train", "test", "validation") or len(relative.parts) > 2 else None
            rows.append((str(path), None if label is None else str(label), None))
    labels = [label for _, label, _ in rows if label is not None]
    if classes is not None:
        names = list(classes)
    elif labels and all(label.isdigit() for label in labels):
        raise InputError(f"{folder}: labels are class indices; give the class names (--labels-file)")
    else:
        names = sorted(set(labels))
    lookup = {name: index for index, name in enumerate(names)}
    items = []
    for path, label, error in rows:
        target = -1
        if error is None and label is not None:
            if label in lookup:
                target = lookup[label]
            elif label.isdigit() and int(label) < len(names):
                target = int(label)
            else:
                error = f"label {label!r} is not one of the classes"
        items.append(LabelledSource(path, error, target))
    display = [name.replace("_", " ") for name in names]
    return LabelledCollection(display, items)


__all__ = ["HFTable", "hf_layout", "open_hf", "table_rows", "imagefolder"]
