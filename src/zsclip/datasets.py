"""Labelled image collections for evaluation: class-per-folder trees and CSV/JSONL manifests.

Each yields ``LabelledSource`` items (an image source plus its class index) and knows its class
names. Reading a collection never decodes images: bad files surface later, one row each, in
the pipeline that decodes them.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .sources import IMAGE_EXTENSIONS, Source


@dataclass(frozen=True)
class LabelledSource(Source):
    """An image source with the index of its true class."""

    target: int = -1


@dataclass
class LabelledCollection:
    """Class names (display form) and the labelled sources, in a stable order; or, for WebDataset,
    the shards whose samples are streamed when evaluated."""

    classnames: list[str]
    items: list[LabelledSource]
    shards: list[str] = field(default_factory=list)


def image_folder(root: str | Path, classnames: Sequence[str] | None = None) -> LabelledCollection:
    """One sub-folder per class, sorted by name (torchvision's ImageFolder order).

    Class names come from the folder names with ``_`` read as a space, or from ``classnames``
    (e.g. a labels file), given in the same sorted-folder order.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root} has no class folders: expect one sub-folder of images per class")
    if classnames is not None and len(classnames) != len(folders):
        raise InputError(f"{len(classnames)} class names given for {len(folders)} class folders in {root}: "
                         "give one name per folder, in sorted folder order")
    names = list(classnames) if classnames is not None else [f.name.replace("_", " ") for f in folders]
    items = [LabelledSource(str(path), target=index)
             for index, folder in enumerate(folders)
             for path in sorted(folder.rglob("*"))
             if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")]
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
    for line, image, label in rows:
        target, error = _target(label, lookup, len(names))
        if not image:
            location, error = f"{path}:{line}", "no path in this row"
        elif "://" in image or Path(image).is_absolute():
            location = image
        else:
            location = str(path.parent / image)
        items.append(LabelledSource(location, error and f"{path}:{line}: {error}", target))
    return LabelledCollection(names, items)


def _manifest_rows(path: Path) -> list[tuple[int, str, str]]:
    if not path.is_file():
        raise InputError(f"manifest {path} not found")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise InputError(f"manifest {path} needs a header row with 'path' and 'label' columns")
        return [(n, (row["path"] or "").strip(), (row["label"] or "").strip()) for n, row in enumerate(reader, 2)]
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"manifest {path}:{n} is not valid JSON ({error.msg})") from None
            rows.append((n, str(record.get("path", "")).strip(), str(record.get("label", "")).strip()))
        return rows
    raise InputError(f"manifest {path}: use .csv (path,label) or .jsonl ({{\"path\", \"label\"}})")


def _names_in_order(rows: list[tuple[int, str, str]], path: Path) -> list[str]:
    labels = [label for _, _, label in rows if label]
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


# --- WebDataset shards ----------------------------------------------------------------------------
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def webdataset(pattern: str, classnames: Sequence[str]) -> LabelledCollection:
    """Tar shards in WebDataset layout (``key.jpg`` + ``key.cls`` / ``key.txt`` / ``key.json``),
    brace patterns expanded ("shards/{00000..00099}.tar"). Samples are read as streams later."""
    from braceexpand import braceexpand

    shards = list(braceexpand(pattern))
    missing = [s for s in shards if "://" not in s and not Path(s).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(shards)} shards not found, e.g. {missing[0]}")
    return LabelledCollection(list(classnames), [], shards=shards)


def shard_samples(shard: str) -> Iterator[tuple[str, dict[str, bytes] | None, str | None]]:
    """(sample name, {extension: bytes}, error) for each sample of a tar shard, streamed in order.
    A shard that cannot be read yields one error item instead of ending the run."""
    key, fields = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, extension = base.partition(".")
                member_key = f"{folder}/{stem}" if folder else stem
                if member_key != key and key is not None:
                    yield f"{shard}#{key}", fields, None
                    fields = {}
                key = member_key
                handle = archive.extractfile(member)
                fields[extension.lower()] = handle.read() if handle else b""
            # a cut inside a header ends a streamed tar silently: a whole archive ends with two
            # zero blocks (1024 bytes) after its last member
            if "://" not in shard and os.path.getsize(shard) < archive.offset + 1024:
                raise tarfile.ReadError("truncated archive (no end-of-archive marker)")
    except (tarfile.TarError, OSError, EOFError) as error:
        if key is not None and fields:
            yield f"{shard}#{key}", fields, None
        yield shard, None, f"cannot read shard: {error}"
        return
    if key is not None:
        yield f"{shard}#{key}", fields, None


def sample_target(fields: dict[str, bytes], lookup: dict[str, int], count: int) -> int:
    """The class index of a sample from its ``cls`` (index), ``txt`` (name) or ``json`` label."""
    if "cls" in fields:
        value: object = fields["cls"].decode("utf-8").strip()
    elif "txt" in fields:
        value = fields["txt"].decode("utf-8").strip()
    elif "json" in fields:
        record = json.loads(fields["json"].decode("utf-8"))
        value = record.get("label", record.get("cls")) if isinstance(record, dict) else None
    else:
        raise ValueError("no label (cls, txt or json)")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        index = int(value)
        if not 0 <= index < count:
            raise ValueError(f"class index {index} is out of range (0..{count - 1})")
        return index
    if isinstance(value, str) and value in lookup:
        return lookup[value]
    raise ValueError(f"label {value!r} is not one of the classes")
