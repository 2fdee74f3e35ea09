"""Labelled image collections: class-per-folder trees, CSV/JSONL manifests, WebDataset shards.

``open_collection`` picks the reader from what the user named (shards.py reads WebDataset shards: it is
below this module, which chooses it, and builds on labelled.py's types as the readers here do). Each collection holds
``LabelledSource`` items (an image source plus its class index), or shards, and knows its class
names. Reading a collection never decodes images: bad files surface later, one row each, in
the pipeline that decodes them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .labelled import LabelledCollection, LabelledSource, MultiLabelSource  # noqa: F401 (imported from here too)
from .sources import images_under
from .textfiles import read_text_file
from .urls import is_url


def image_folder(root: str | Path, classnames: Sequence[str] | None = None) -> LabelledCollection:
    """One sub-folder per class, sorted by name (torchvision's ImageFolder order).

    Class names come from the folder names with ``_`` read as a space, or from ``classnames``
    (e.g. a labels file), given in the same sorted-folder order.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} not found")
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise InputError(f"data folder {root} cannot be read: {error.strerror or error}") from None
    if not folders:
        raise InputError(f"{root} has no class folders: expect one sub-folder of images per class")
    if classnames is not None and len(classnames) != len(folders):
        raise InputError(f"{len(classnames)} class names given for {len(folders)} class folders in {root}: "
                         "give one name per folder, in sorted folder order")
    names = list(classnames) if classnames is not None else [f.name.replace("_", " ") for f in folders]
    items = [LabelledSource(source.name, source.error, target=index)
             for index, folder in enumerate(folders) for source in images_under(folder)]
    return LabelledCollection(names, items)


def manifest(path: str | Path, classnames: Sequence[str] | None = None) -> LabelledCollection:
    """A CSV (header ``path,label``) or JSONL (``{"path": ..., "label": ...}``) manifest.

    A label is a class name or a class index; relative paths resolve against the manifest's folder.
    Without ``classnames`` the classes are the distinct label names in order of first appearance.
    A row that cannot be read becomes a source carrying its error (reported, not fatal).
    """
    path = Path(path)
    rows = _manifest_rows(path)
    names = list(classnames) if classnames is not None else _names_in_order(rows, path)
    lookup = {name: index for index, name in enumerate(names)}
    items = []
    for line, image, label, problem in rows:
        target, error = _target(label, lookup, len(names))
        if problem:
            location, error = f"{path}:{line}", problem
        elif not image:
            location, error = f"{path}:{line}", "no path in this row"
        elif is_url(image) or Path(image).is_absolute():
            location = image
        else:
            location = str(path.parent / image)
        items.append(LabelledSource(location, error and f"{path}:{line}: {error}", target))
    return LabelledCollection(names, items)


def is_multilabel_manifest(path: str | Path) -> bool:
    """A CSV whose header has a ``labels`` column (and no ``label``), or a JSONL whose first object has ``labels``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (".csv", ".jsonl", ".ndjson"):
        return False
    text = read_text_file(path, "manifest")
    if suffix == ".csv":
        header = next(csv.reader(io.StringIO(text, newline="")), [])
        names = {name.strip() for name in header}
        return "labels" in names and "label" not in names
    for line in text.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return False
            return isinstance(record, dict) and "labels" in record and "label" not in record
    return False


def multilabel_manifest(path: str | Path, classnames: Sequence[str] | None = None) -> LabelledCollection:
    """A multi-label manifest: CSV ``path,labels`` with names separated by ``;`` ("dog;cat"; empty =
    none of the labels), or JSONL ``{"path": ..., "labels": ["dog", "cat"]}``. Without ``classnames``
    the labels are the distinct names in order of first appearance; a name that is not one of
    ``classnames`` makes its row an error row (reported, not fatal)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} not found")
    text = read_text_file(path, "manifest")
    rows: list[tuple[int, str, list[str], str | None]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                cell = _cell(row, "labels")
                rows.append((reader.line_num, _cell(row, "path"),
                             [name.strip() for name in cell.split(";") if name.strip()], None))
        except csv.Error as error:
            raise InputError(f"manifest {path}, line {reader.line_num}: not valid CSV ({error})") from None
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                rows.append((n, "", [], f"not valid JSON ({getattr(error, 'msg', error)})"))
                continue
            labels = record.get("labels") if isinstance(record, dict) else None
            if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
                rows.append((n, "", [], 'not an object {"path": ..., "labels": [names]}'))
                continue
            rows.append((n, _field(record.get("path")), [name.strip() for name in labels if name.strip()], None))
    names = list(classnames) if classnames is not None else list(dict.fromkeys(
        name for _, _, labels, _ in rows for name in labels))
    if not names:
        raise InputError(f"manifest {path} names no labels: give each image its labels (\"dog;cat\")")
    lookup = {name: index for index, name in enumerate(names)}
    items, label_sets = [], []
    for line, image, labels, problem in rows:
        unknown = next((name for name in labels if name not in lookup), None)
        error = problem or (None if image else "no path in this row") or (
            f"label {unknown!r} is not one of the labels" if unknown is not None else None)
        if error or not image:
            location = f"{path}:{line}"
        elif is_url(image) or Path(image).is_absolute():
            location = image
        else:
            location = str(path.parent / image)
        items.append(LabelledSource(location, error and f"{path}:{line}: {error}", len(items)))
        label_sets.append(tuple(sorted({lookup[name] for name in labels if name in lookup})))
    return LabelledCollection(names, items, label_sets=label_sets)


def _manifest_rows(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line number, path, label, why the row cannot be used or None) per row."""
    if not path.is_file():
        raise InputError(f"manifest {path} not found")
    suffix = path.suffix.lower()
    text = read_text_file(path, "manifest")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames
            if not header or not {"path", "label"} <= {name.strip() for name in header if name}:
                raise InputError(f"manifest {path} needs a header row with 'path' and 'label' columns")
            return [(reader.line_num, _cell(row, "path"), _cell(row, "label"), None) for row in reader]
        except csv.Error as error:
            raise InputError(f"manifest {path}, line {reader.line_num}: not valid CSV ({error})") from None
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                rows.append((n, "", "", f"not valid JSON ({getattr(error, 'msg', error)})"))
                continue
            if not isinstance(record, dict):
                rows.append((n, "", "", 'not an object {"path": ..., "label": ...}'))
                continue
            rows.append((n, _field(record.get("path")), _field(record.get("label")), None))
        if rows and all(problem for *_, problem in rows):
            raise InputError(f"manifest {path}: no line is a JSON object {{\"path\": ..., \"label\": ...}} "
                             f"(line {rows[0][0]}: {rows[0][3]})")
        return rows
    raise InputError(f"manifest {path}: use .csv (path,label) or .jsonl ({{\"path\", \"label\"}})")


def _cell(row: dict, column: str) -> str:
    """A CSV cell by column name, tolerating spaces around header names."""
    value = row.get(column)
    if value is None:
        value = next((v for k, v in row.items() if k and k.strip() == column), "")
    return (value or "").strip() if isinstance(value, str) else ""


def _field(value: object) -> str:
    """A JSONL path or label as text (a number label stays a class index)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return str(value).strip() if isinstance(value, float) else ""
    return str(value).strip()


def _names_in_order(rows: list[tuple[int, str, str, str | None]], path: Path) -> list[str]:
    labels = [label for _, _, label, _ in rows if label]
    if labels and all(label.isdigit() for label in labels):
        raise InputError(f"manifest {path} labels classes by index: give the class names (--labels-file)")
    return list(dict.fromkeys(label for label in labels if not label.isdigit()))


def _target(label: str, lookup: dict[str, int], count: int) -> tuple[int, str | None]:
    if label.isdigit():
        index = int(label)
        return (index, None) if index < count else (-1, f"class index {index} is out of range (0..{count - 1})")
    if label in lookup:
        return lookup[label], None
    return -1, f"label {label!r} is not one of the classes" if label else "no label in this row"


def open_collection(
    data: str | Path,
    classes: Sequence[Sequence[str]] | None = None,
    dataset: str | None = None,
) -> tuple[LabelledCollection, str | list[list[str]] | None]:
    """The labelled collection ``data`` names, and what to build its classifiers from.

    ``data``: a class-per-folder tree, a .csv/.jsonl manifest, or WebDataset shards (a .tar or a
    brace pattern such as "shards/{00000..00099}.tar", which needs ``classes``). ``classes``: synonym
    lists (e.g. from ``read_labels``) in the collection's class order. A folder of 1000 WordNet-id
    folders (or ``dataset="imagenet1k"``) gets ImageNet's class names. Returns the collection and
    the classes to build from: ``classes``, a named list ("imagenet1k"), or None for the
    collection's own names.
    """
    from .shards import webdataset

    names = [synonyms[0] for synonyms in classes] if classes else None
    text = str(data)
    path = Path(data)
    if path.is_dir():
        if classes is None and (dataset == "imagenet1k" or looks_like_imagenet(path)):
            from ..prompts import CLASSNAME_SETS

            return image_folder(path, CLASSNAME_SETS["imagenet1k"]()), "imagenet1k"
        return image_folder(path, names), classes
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        if is_multilabel_manifest(path):
            return multilabel_manifest(path, names), classes
        return manifest(path, names), classes
    if text.lower().endswith((".tar", ".tar.gz", ".tgz")) or "{" in text:
        if classes is None:
            raise InputError(f"{text}: WebDataset shards need --labels-file (class names in class-index order)")
        return webdataset(text, names), classes
    raise InputError(f"--data {text}: not a folder, a .csv/.jsonl manifest or WebDataset shards (.tar, .tar.gz)")


def looks_like_imagenet(folder: Path) -> bool:
    """1000 class folders named by WordNet id (n01440764, ...): ImageNet-1k, whose class order is
    the sorted ids, the order of open_clip's ImageNet class names."""
    names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(names) == 1000 and all(re.fullmatch(r"n\d{8}", name) for name in names)


def read_captions(path: str | Path) -> list[tuple[str, str]]:
    """(image, caption) rows of a ``path,caption`` CSV (or JSONL ``{"path", "caption"}``), several
    rows per image allowed; relative paths resolve against the file's folder. Rows without a path
    or a caption are refused in one line (a retrieval set with holes would skew recall)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} not found (a CSV with a header path,caption)")
    text = read_text_file(path, "captions file")
    rows: list[tuple[int, str, str]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as error:
                    raise InputError(f"captions file {path}, line {n}: not valid JSON ({error})") from None
                record = record if isinstance(record, dict) else {}
                rows.append((n, _field(record.get("path")), str(record.get("caption") or "").strip()))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            if not reader.fieldnames or not {"path", "caption"} <= {n.strip() for n in reader.fieldnames if n}:
                raise InputError(f"captions file {path} needs a header row with 'path' and 'caption' columns")
            rows = [(reader.line_num, _cell(row, "path"), _cell(row, "caption")) for row in reader]
        except csv.Error as error:
            raise InputError(f"captions file {path}, line {reader.line_num}: not valid CSV ({error})") from None
    out = []
    for line, image, caption in rows:
        if not image or not caption:
            raise InputError(f"captions file {path}, line {line}: a row needs a path and a caption")
        location = image if is_url(image) or Path(image).is_absolute() else str(path.parent / image)
        out.append((location, caption))
    if not out:
        raise InputError(f"captions file {path} has no rows")
    return out
