"""Hugging Face datasets on disk, read with pyarrow directly (no ``datasets`` library).

Three layouts, as ``datasets`` writes them:

- **Parquet** (what the Hub serves, ``data/train-00000-of-00003.parquet``): a file or a folder of them.
  The image column is the ``Image`` feature, a struct ``{bytes: binary, path: string}``; the label
  column a ``ClassLabel`` (an integer), whose class names are in the schema's metadata under the
  ``huggingface`` key (``{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}``).
- **save_to_disk** folders: ``data-00000-of-00001.arrow`` (Arrow IPC streams) with ``dataset_info.json``
  and ``state.json``; the same features, from ``dataset_info.json`` (or the schema's metadata).
- **imagefolder** with ``metadata.csv`` / ``metadata.jsonl`` (a ``file_name`` column, relative to the
  metadata file's folder): image files; labels from a ``label`` column, else from the class folder each file
  is in. A folder of split folders (``DIR/train/metadata.csv``, ``DIR/test/...``, as the HF docs lay them out)
  is one split when it holds one, and refused naming the splits when it holds several.

Every file ``datasets`` writes beside the data (``state.json``, ``dataset_info.json``, metadata files) is
checked before any row is read: a field of the wrong shape is one line naming the file and the field.

Why pyarrow and not ``datasets``: pyarrow is already here (the store is Parquet), reads both file kinds
as streams (Parquet row group by row group, Arrow IPC memory-mapped batch by batch, so a split is never
in memory whole), needs no cache folder (``datasets`` converts everything into its own Arrow cache
first, a full copy of the split) and pulls in no dependencies (``datasets`` brings fsspec, dill,
multiprocess, pandas and an HTTP client). The formats are documented and stable.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..errors import InputError
from .collections import LabelledCollection, LabelledSource, image_folder
from .textfiles import read_text_file

#: Rows read from a file at a time (a record batch); decoded images stay bounded by the batch size.
READ_ROWS = 256
#: Consecutive Parquet row groups are read as one part (a decode worker's or a Ray task's unit) up to this
#: many rows: a file of thousands of one-row groups is a few parts, each opening the file once.
PART_ROWS = 256
LABEL_NAMES = ("label", "labels", "class", "fine_label")
#: Folder names ``datasets`` reads as splits (its ``SPLIT_KEYWORDS``), and the split each names.
SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "dev": "validation", "val": "validation", "test": "test", "testing": "test", "eval": "test",
               "evaluation": "test"}
UNLABELLED = "no label (-1, how `datasets` marks an unlabelled row)"


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
    #: (file index, the Parquet row groups of the part or None for a whole Arrow file, the part's first row)
    parts: list[tuple[int, tuple[int, ...] | None, int]] = field(default_factory=list)
    #: the dataset's class index -> the index into ``classnames`` (a labels file in another order than the
    #: ClassLabel's); None: the same order
    targets: list[int] | None = None

    def name_of(self, file: int, row: int) -> str:
        """``FILE#ROW``: the file as the user named its split (the root joined with the file's place in it)."""
        return f"{_file_name(self.root, self.files[file])}#{row}"


@functools.lru_cache(maxsize=64)
def _file_name(root: Path, file: Path) -> str:
    """A data file's name in row names, worked out once per file (not a stat per row)."""
    try:
        relative = file.relative_to(root)
    except ValueError:
        relative = file
    return str(root / relative if root.is_dir() else file)


def hf_layout(path: str | os.PathLike) -> str | None:
    """'parquet', 'arrow' (save_to_disk), 'imagefolder', 'dataset_dict' or 'splits' (an imagefolder of split
    folders, ``DIR/train/metadata.csv``) for a Hugging Face dataset on disk, else None."""
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
        if _has_metadata(path):
            return "imagefolder"
        files = _parquet_files(path)
        if files and _has_image_column(files[0]):
            return "parquet"
        if _split_folders(path):
            return "splits"
    except OSError:
        return None
    return None


def _has_metadata(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("metadata.csv", "metadata.jsonl"))


def _split_folders(path: Path) -> dict[str, Path]:
    """The split folders of an imagefolder laid out as the HF docs show (every sub-folder named as a split,
    one at least holding a metadata file or class folders), by name; {} for any other folder (a class
    folder tree whose classes happen to include "test" holds images, not folders)."""
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders or any(p.name.lower() not in SPLIT_WORDS for p in folders):
        return {}
    if not any(_has_metadata(p) or any(q.is_dir() and not q.name.startswith(".") for q in p.iterdir())
               for p in folders):
        return {}
    return {p.name: p for p in folders}


def _has_image_column(file: Path) -> bool:
    """A Parquet file written by ``datasets`` (its metadata) or holding a {bytes, path} image struct (not a
    zsclip store shard or a results file that happens to sit in a folder of images)."""
    try:
        schema = _schema(file, "parquet")
    except InputError:
        return False
    return b"huggingface" in (schema.metadata or {}) or any(_is_image_type(f.type) for f in schema)


def _is_image_type(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(kind) and {"bytes", "path"} <= {c.name for c in kind}


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))


def open_hf(path: str | os.PathLike, classes: Sequence[str] | None = None, *,
            labelled: bool = True) -> HFTable | LabelledCollection:
    """The split at ``path``: an ``HFTable`` for Parquet / save_to_disk data, a ``LabelledCollection``
    (image files) for an imagefolder. ``classes``: class names for integer labels without a ClassLabel, or
    the ClassLabel's names in any order (matched by name). ``labelled=False`` (classify, embed) reads no
    labels at all: an unlabelled split (every label -1) is read as well as a labelled one."""
    path = Path(path)
    layout = hf_layout(path)
    if layout == "dataset_dict":
        splits = _dataset_dict_splits(path)
        raise InputError(f"{path} holds several splits ({', '.join(splits)}): name one, e.g. "
                         f"{path / (splits[0] if splits else 'test')}")
    if layout == "splits":
        only = one_split(path)
        if hf_layout(only):
            return open_hf(only, classes, labelled=labelled)
        return image_folder(only, classes)
    if layout == "imagefolder":
        return imagefolder(path, classes, labelled=labelled)
    if layout == "arrow":
        files = _data_files(path)
        info = path / "dataset_info.json"
        table = _table(path, files, "arrow", _json(info).get("features"), str(info), classes, labelled)
    elif layout == "parquet":
        files = [path] if path.is_file() else _parquet_files(path)
        splits = {_split_of(f) for f in files} - {None}
        if len(splits) > 1:
            raise InputError(f"{path} holds several splits ({', '.join(sorted(splits))}): name one split's file or "
                             "folder")
        table = _table(path, files, "parquet", None, None, classes, labelled)
    else:
        raise InputError(f"{path}: not a Hugging Face dataset (Parquet, save_to_disk or imagefolder with metadata)")
    if labelled and table.label_column and _every_label_missing(table):
        raise InputError(f"{path} is unlabelled: every row's {table.label_column!r} is -1 (how `datasets` marks a "
                         "split without labels); evaluate a labelled split, or classify / embed this one")
    return table


def one_split(path: str | os.PathLike) -> Path:
    """The split folder of a folder of split folders (``hf_layout`` 'splits') that holds one; several are
    refused, naming each (which to give instead)."""
    path = Path(path)
    splits = _split_folders(path)
    if len(splits) != 1:
        raise InputError(f"{path} holds the splits {', '.join(splits)} (a Hugging Face imagefolder): name one, "
                         f"{' or '.join(str(folder) for folder in splits.values())}")
    return next(iter(splits.values()))


def _dataset_dict_splits(path: Path) -> list[str]:
    file = path / "dataset_dict.json"
    splits = _json(file).get("splits")
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise InputError(f"{file}: 'splits' is {_shape(splits)}, expected a list of split names")
    return splits


def _data_files(path: Path) -> list[Path]:
    """The Arrow files ``state.json`` lists, each a file name inside ``path``."""
    state = path / "state.json"
    entries = _json(state).get("_data_files")
    expected = 'expected a list of {"filename": "data-00000-of-00001.arrow"} objects'
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{state}: '_data_files' is {_shape(entries)}, {expected}")
    files = []
    for number, entry in enumerate(entries):
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            shown = f"{name!r}" if isinstance(entry, dict) else _shape(entry)
            raise InputError(f"{state}: '_data_files'[{number}] is {shown}, {expected} (a file in {path})")
        files.append(path / name)
    return files


def _shape(value: object) -> str:
    """A JSON value as a message names it: null, a number, a list, ... (what a field holds instead)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        others = [item for item in value if not isinstance(item, str)]
        return "an empty list" if not value else f"a list holding {_shape(others[0])}" if others else "a list"
    return "an object"


def _split_of(file: Path) -> str | None:
    stem = file.stem
    if "-of-" in stem and "-" in stem:
        return stem.split("-")[0]
    return SPLIT_WORDS.get(file.parent.name.lower())


def _json(path: Path) -> dict:
    try:
        value = json.loads(read_text_file(path, path.name))
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"{path}: not valid JSON ({getattr(error, 'msg', error)})") from None
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


def _features(schema, file: Path) -> tuple[dict | None, str]:
    """The ``datasets`` features a Parquet file's schema metadata records (None when it records none)."""
    metadata = (schema.metadata or {}).get(b"huggingface")
    if metadata:
        try:
            info = json.loads(metadata)
            return info.get("info", {}).get("features"), f"{file} (its huggingface schema metadata)"
        except (json.JSONDecodeError, RecursionError, AttributeError, UnicodeDecodeError):
            pass
    return None, str(file)


def _table(root: Path, files: list[Path], kind: str, features, source: str | None,
           classes: Sequence[str] | None, labelled: bool) -> HFTable:
    """Checks every file's columns against the features before a row is read (a declared column that is
    missing, a ClassLabel without names, ...: one line naming the file and the field)."""
    import pyarrow as pa

    schema = _schema(files[0], kind)
    if source is None:
        features, source = _features(schema, files[0])
    if features is None:
        features = {}
    if not isinstance(features, dict):
        raise InputError(f"{source}: 'features' is {_shape(features)}, expected an object naming each column")
    columns = ", ".join(schema.names)
    image = next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    if image is not None and image not in schema.names:
        raise InputError(f"{source}: features declare the Image column {image!r}, which {files[0]} lacks (its "
                         f"columns: {columns})")
    if image is None:  # no features recorded: the first {bytes, path} struct column
        image = next((f.name for f in schema if _is_image_type(f.type)), None)
    if image is None:
        raise InputError(f"{files[0]}: no image column (an Image feature, a {{bytes, path}} struct)")
    if not _is_image_type(schema.field(image).type):
        raise InputError(f"{files[0]}: column {image!r} is {schema.field(image).type}, not an image (a {{bytes, "
                         "path}} struct)")
    label, names, targets = None, None, None
    if labelled:
        label = next((name for name, f in features.items()
                      if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None)
        if label is not None:
            names = features[label].get("names")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise InputError(f"{source}: features.{label}.names is {_shape(names)}, expected the list of "
                                 "class names")
            if label not in schema.names:
                raise InputError(f"{source}: features declare the ClassLabel column {label!r}, which {files[0]} "
                                 f"lacks (its columns: {columns})")
            if classes is not None:
                targets = _by_name(root, names, classes)
                names = list(classes)
            else:
                names = [n.replace("_", " ") for n in names]
        else:
            label = next((n for n in LABEL_NAMES if n in schema.names), None)
            names = list(classes) if classes is not None and label is not None else None
        if label is not None and not pa.types.is_integer(schema.field(label).type):
            if names is not None:
                raise InputError(f"{files[0]}: the label column {label!r} is {schema.field(label).type}, not class "
                                 "indices (a ClassLabel)")
            label = None
    table = HFTable(root, files, kind, image, label, names if label is not None else None, targets=targets)
    needed = [image] + ([label] if label else [])
    for index, file in enumerate(files):
        if kind == "parquet":
            metadata = _parquet_metadata(file)
            other = metadata.schema.to_arrow_schema()
            table.rows += metadata.num_rows
            table.parts += _parts(index, [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
        else:
            other = _schema(file, kind) if index else schema
            table.parts.append((index, None, 0))
        missing = [name for name in needed if name not in other.names]
        if missing:
            raise InputError(f"{file}: no column {missing[0]!r} (which {files[0]} has): the split's files differ")
    return table


def _by_name(root: Path, names: list[str], classes: Sequence[str]) -> list[int]:
    """Each ClassLabel index's position in ``classes`` (a labels file), matched by name ("_" read as a
    space): a labels file in another order keeps every image's class. Names the dataset lacks, or classes
    the file leaves out, are refused: either would score images against the wrong class."""
    def key(name: str) -> str:
        return name.replace("_", " ").strip()

    given = {key(name): position for position, name in enumerate(classes)}
    own = {key(name) for name in names}
    unknown = [name for name in classes if key(name) not in own]
    if unknown:
        raise InputError(f"{root}: the labels file names classes the dataset's ClassLabel lacks: "
                         f"{', '.join(map(repr, unknown[:8]))}{' ...' if len(unknown) > 8 else ''} (its classes: "
                         f"{', '.join(key(n) for n in names[:8])}{' ...' if len(names) > 8 else ''})")
    left_out = [key(name) for name in names if key(name) not in given]
    if left_out:
        raise InputError(f"{root}: the labels file leaves out the dataset's classes "
                         f"{', '.join(map(repr, left_out[:8]))}{' ...' if len(left_out) > 8 else ''}: name every "
                         "class of its ClassLabel (in any order)")
    return [given[key(name)] for name in names]


def _parquet_metadata(file: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file).metadata
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{file}: not readable as Parquet ({error})") from None


def _parts(index: int, group_rows: list[int]) -> list[tuple[int, tuple[int, ...], int]]:
    """Consecutive row groups of one file joined into parts of up to ``PART_ROWS`` rows (a large group
    alone), each with its first row."""
    parts, groups, start, rows = [], [], 0, 0
    for group, count in enumerate(group_rows):
        if groups and rows + count > PART_ROWS:
            parts.append((index, tuple(groups), start))
            start, groups, rows = start + rows, [], 0
        groups.append(group)
        rows += count
    if groups:
        parts.append((index, tuple(groups), start))
    return parts


def _every_label_missing(table: HFTable) -> bool:
    """Whether every label of the split is -1 (or null): an unlabelled split, told before any image is
    decoded. Reads the label column alone; a file that cannot be read is left to its error rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for file in table.files:
        try:
            if table.kind == "parquet":
                column = pq.ParquetFile(file).read(columns=[table.label_column]).column(0)
            else:
                with pa.memory_map(str(file)) as source:
                    column = pa.ipc.open_stream(source).read_all().column(table.label_column)
        except (OSError, pa.ArrowException):
            return False
        if len(column) and pc.max(column).as_py() not in (None, -1):
            return False
    return True


def table_rows(table: HFTable, part: tuple[int, tuple[int, ...] | None, int]
               ) -> Iterator[tuple[str, bytes | None, str | None, int, str | None]]:
    """(name, image bytes, image path, target, error) per row of one part (Parquet row groups or an Arrow
    file), read ``READ_ROWS`` at a time. Rows that cannot be read are one error row naming the first row
    lost (a damaged row group, a truncated Arrow file), with how far the loss goes."""
    import pyarrow as pa

    file_index, groups, row = part
    file = table.files[file_index]
    columns = [table.image_column] + ([table.label_column] if table.label_column else [])
    if groups is None:
        try:
            with pa.memory_map(str(file)) as source:
                for item in _rows(table, file_index, pa.ipc.open_stream(source), row):
                    row += 1
                    yield item
        except (OSError, pa.ArrowException) as error:
            yield (table.name_of(file_index, row), None, None, -1,
                   f"{file}: cannot be read from row {row} on, the rest of the file is lost ({error})")
        return
    try:
        reader = _open_parquet(file)
    except (OSError, pa.ArrowException) as error:
        yield table.name_of(file_index, row), None, None, -1, f"{file}: cannot be read ({error})"
        return
    remaining, first = list(groups), row  # the groups not yet read through, the first row of the first
    while remaining:
        try:  # one reader over the groups: a call per group costs a millisecond, 1,000 one-row groups a second
            batches = reader.iter_batches(batch_size=READ_ROWS, row_groups=remaining, columns=columns)
            for item in _rows(table, file_index, batches, row):
                row += 1
                yield item
            return
        except (OSError, pa.ArrowException):
            pass  # the reader reads ahead: the damaged group may be a later one than the group at ``row``
        while remaining and first + reader.metadata.row_group(remaining[0]).num_rows <= row:
            first += reader.metadata.row_group(remaining.pop(0)).num_rows  # read through before the error
        if not remaining:
            return
        group = remaining.pop(0)
        end = first + reader.metadata.row_group(group).num_rows
        try:  # the group at ``row`` alone: its rows up to the damage, then one error row for the rest of it
            alone = reader.iter_batches(batch_size=READ_ROWS, row_groups=[group], columns=columns)
            for item in islice(_rows(table, file_index, alone, first), row - first, None):
                row += 1
                yield item
        except (OSError, pa.ArrowException) as error:
            yield (table.name_of(file_index, row), None, None, -1,
                   f"{file}: rows {row}..{end - 1} (row group {group}) cannot be read ({error})")
        row = first = end


def _open_parquet(file: Path):
    """``file`` opened as Parquet, once per process while it is unchanged: opening parses the footer, whose
    size grows with the row groups, so a part that reopened its file made reading quadratic in the groups
    (a decode worker, a Ray worker reading the parts of one file parse its footer once)."""
    info = os.stat(file)
    return _opened(os.path.realpath(file), info.st_size, info.st_mtime_ns, os.getpid())


@functools.lru_cache(maxsize=8)
def _opened(file: str, size: int, mtime_ns: int, process: int):
    import pyarrow.parquet as pq

    return pq.ParquetFile(file)


def _rows(table: HFTable, file_index: int, batches, row: int):
    count = len(table.classnames) if table.classnames else None
    folder = table.files[file_index].parent
    for batch in batches:
        images = batch.column(table.image_column).to_pylist()
        labels = batch.column(table.label_column).to_pylist() if table.label_column else [None] * len(images)
        for image, label in zip(images, labels, strict=True):
            name = table.name_of(file_index, row)
            row += 1
            target, error = -1, None
            if count is not None:
                if label is None or label == -1:
                    error = UNLABELLED
                elif isinstance(label, int) and 0 <= label < count:  # targets: one per class, as classnames
                    target = table.targets[label] if table.targets else label
                else:
                    error = f"label {label!r} is not a class index (0..{count - 1})"
            data = image.get("bytes") if isinstance(image, dict) else None
            path = image.get("path") if isinstance(image, dict) else None
            if not data and not path:
                yield name, None, None, target, error or "no image in this row"
                continue
            if not data and not os.path.isabs(path):
                path = os.path.abspath(folder / path)  # a path-only row: relative to the file that holds it
            yield name, data or None, path, target, error


def imagefolder(folder: Path, classes: Sequence[str] | None = None, *, labelled: bool = True) -> LabelledCollection:
    """An imagefolder with metadata files: every ``file_name`` row (a path inside the metadata file's folder),
    labelled by a ``label`` column (class names sorted, or indices into ``classes``) or else by the class
    folder it is in (none at the top level; a split folder is not a class). A row that cannot be used is an
    error row naming the metadata file, its line and the field."""
    rows: list[tuple[str, str | None, str | None]] = []  # (path, label, error)
    for metadata in sorted(list(folder.rglob("metadata.csv")) + list(folder.rglob("metadata.jsonl"))):
        for line, record, problem in _metadata_records(metadata):
            where = f"{metadata}:{line}"
            name = record.get("file_name") if record is not None else None
            if problem is None and (not isinstance(name, str) or not name.strip()):
                problem = f"no file_name (a path relative to {metadata.parent})"
            elif problem is None and (Path(name).is_absolute() or ".." in Path(name).parts):
                problem = f"file_name {name!r} is not inside {metadata.parent} (give a path relative to it, without ..)"
            if problem is not None:
                rows.append((where, None, f"{where}: {problem}"))
                continue
            path = metadata.parent / name
            label = next((record[n] for n in LABEL_NAMES if record.get(n) not in (None, "")), None) if labelled \
                else None
            if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
                rows.append((str(path), None, f"{where}: label {label!r} is not a class name or index"))
                continue
            if labelled and label is None:
                parts = path.relative_to(folder).parts
                if len(parts) > 1 and parts[0].lower() in SPLIT_WORDS:
                    parts = parts[1:]
                label = parts[-2] if len(parts) > 1 else None
            rows.append((str(path), None if label is None else str(label), None))
    splits = sorted({SPLIT_WORDS[first] for first in (_first_part(folder, path) for path, _, error in rows
                                                       if error is None) if first in SPLIT_WORDS})
    if len(splits) > 1:  # datasets reads these as splits: mixing them would evaluate train and test as one
        raise InputError(f"{folder}: its metadata lists files of the splits {', '.join(splits)}: give each split "
                         f"folder its own metadata file ({folder / splits[0] / 'metadata.csv'}) and name one")
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


def _first_part(folder: Path, path: str) -> str:
    parts = Path(path).relative_to(folder).parts
    return parts[0].lower() if len(parts) > 1 else ""


def _metadata_records(metadata: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line, record, why the line cannot be used) per row of a metadata.csv / metadata.jsonl."""
    text = read_text_file(metadata, metadata.name)
    if metadata.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for record in reader:
                yield reader.line_num, record, None
        except csv.Error as error:
            raise InputError(f"{metadata}, line {reader.line_num}: not valid CSV ({error})") from None
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            yield number, None, f"not valid JSON ({getattr(error, 'msg', error)})"
            continue
        if not isinstance(record, dict):
            yield number, None, 'not an object {"file_name": ..., "label": ...}'
        else:
            yield number, record, None


__all__ = ["HFTable", "hf_layout", "one_split", "open_hf", "table_rows", "imagefolder", "SPLIT_WORDS"]
