"""Labelled collections from labelling tools: a Label Studio JSON export and a FiftyOne labels.json.

The reviewed labels of a labelling round become data for ``eval`` and ``adapt`` (a few-shot head), closing
the loop that ``zsclip classify --format label-studio / fiftyone`` opens.

- Label Studio (``Export > JSON``): a list of tasks; each task's label is its latest annotation that was not
  cancelled: a ``choices`` result (several choices: a multi-label collection) or a ``taxonomy`` result (its
  path's last name). Tasks nobody annotated are not labelled data and are left out (counted in
  ``unlabelled``). The image is ``data.path`` when zsclip wrote the task (the file it read), else
  ``data.image``: an http(s) URL, or Label Studio's local-files address ``/data/local-files/?d=PATH``, PATH
  relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (read from the environment, else ``/``). Images uploaded
  into Label Studio (``/data/upload/...``) live on its server: those rows carry an error that says so.
- FiftyOne (``FiftyOneImageClassificationDataset``): ``labels.json`` with ``classes`` and ``labels`` {id:
  target}, a target being a class index, a name, ``{"label": ...}``, or a list of them (multi-label); the
  image of id ``x`` is ``data/x.<ext>`` beside it (an absolute id is the path itself).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import InputError
from .collections import LabelledCollection, LabelledSource
from .textfiles import read_text_file
from .urls import is_url

LOCAL_FILES = "/data/local-files/"


def is_label_studio_export(path: str | os.PathLike) -> bool:
    """A .json file whose top level is a list of tasks (objects with ``data`` and ``annotations``)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[") and (b'"annotations"' in head or b'"data"' in head or head[1:].strip() in (b"", b"]"))


def is_fiftyone_labels(path: str | os.PathLike) -> bool:
    """A FiftyOne dataset folder (``labels.json`` and ``data/``) or its ``labels.json``."""
    path = Path(path)
    if path.is_dir():
        return (path / "labels.json").is_file() and (path / "data").is_dir()
    return path.name == "labels.json" and path.is_file()


def label_studio_export(path: str | os.PathLike, classnames: list[str] | None = None) -> tuple[LabelledCollection,
                                                                                                  int]:
    """The annotated tasks of a Label Studio JSON export as a labelled collection, and how many were left
    out unannotated."""
    path = Path(path)
    try:
        tasks = json.loads(read_text_file(path, "Label Studio export"))
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"Label Studio export {path}: not valid JSON ({getattr(error, 'msg', error)})") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path}: a Label Studio JSON export is a list of tasks (Export > JSON)")
    rows, unlabelled = [], 0
    for index, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            rows.append((f"{path}: task {index + 1}", [], "not a task object with data"))
            continue
        labels = _annotated_labels(task.get("annotations"))
        if labels is None:
            unlabelled += 1
            continue
        location, problem = _task_image(task["data"])
        rows.append((location or f"{path}: task {task.get('id', index + 1)}", labels, problem))
    if not rows:
        raise InputError(f"{path}: no annotated task (of {unlabelled}): review some tasks in Label Studio, then "
                         "export again")
    return _collection(rows, classnames, f"Label Studio export {path}"), unlabelled


def _annotated_labels(annotations: object) -> list[str] | None:
    """The labels of the latest annotation that was not cancelled, or None (not annotated)."""
    if not isinstance(annotations, list):
        return None
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    latest = max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    labels: list[str] = []
    for item in latest.get("result") or []:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("choices"), list):
            labels += [name for name in value["choices"] if isinstance(name, str)]
        elif isinstance(value.get("taxonomy"), list):
            labels += [p[-1] for p in value["taxonomy"] if isinstance(p, list) and p and isinstance(p[-1], str)]
    return labels or None


def _task_image(data: dict) -> tuple[str | None, str | None]:
    """(the image's path or URL, or why it cannot be read)."""
    written = data.get("path")
    if isinstance(written, str) and written and (is_url(written) or Path(written).exists()):
        return written, None
    value = next((v for k, v in data.items() if k in ("image", "video", "img")), None)
    if value is None:
        value = next((v for v in data.values() if isinstance(v, str) and (v.startswith("/data/") or is_url(v))), None)
    if not isinstance(value, str) or not value:
        return None, "the task names no image (data.image)"
    if is_url(value):
        parts = urlsplit(value)
        if not parts.path.startswith(LOCAL_FILES):
            return value, None
        value = parts.path + ("?" + parts.query if parts.query else "")
    if value.startswith(LOCAL_FILES):
        relative = parse_qs(urlsplit(value).query).get("d", [""])[0]
        root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", os.sep)
        return str(Path(root) / unquote(relative)), None if relative else "a local-files address without ?d="
    if value.startswith("/data/upload/"):
        return value, ("uploaded into Label Studio: the file lives on its server; classify files from local storage "
                       "or a URL to read them back")
    return value, None


def fiftyone_labels(path: str | os.PathLike, classnames: list[str] | None = None) -> LabelledCollection:
    """A FiftyOne image classification dataset (folder or labels.json) as a labelled collection."""
    path = Path(path)
    labels_path = path / "labels.json" if path.is_dir() else path
    try:
        document = json.loads(read_text_file(labels_path, "FiftyOne labels"))
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"{labels_path}: not valid JSON ({getattr(error, 'msg', error)})") from None
    if not isinstance(document, dict) or not isinstance(document.get("labels"), dict):
        raise InputError(f"{labels_path}: FiftyOne's labels.json holds "
                         '{"classes": [...], "labels": {id: target}}')
    classes = document.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise InputError(f"{labels_path}: classes must be a list of names")
    data = labels_path.parent / "data"
    files = {p.with_suffix("").relative_to(data).as_posix(): p for p in data.rglob("*") if p.is_file()} \
        if data.is_dir() else {}
    rows = []
    for uid, target in document["labels"].items():
        if target is None:
            continue  # unlabelled in FiftyOne's format
        image = files.get(uid) or (Path(uid) if Path(uid).is_absolute() else None)
        names, problem = _targets(target, classes)
        rows.append((str(image) if image is not None else f"{labels_path}: {uid}", names,
                     problem or (None if image is not None else f"no file data/{uid}.* for this id")))
    if not rows:
        raise InputError(f"{labels_path}: no labelled image")
    return _collection(rows, classnames or None, f"FiftyOne labels {labels_path}",
                       order=classes if classnames is None else None)


def _targets(target: object, classes: list[str] | None) -> tuple[list[str], str | None]:
    items = target if isinstance(target, list) else [target]
    names = []
    for item in items:
        value = item.get("label") if isinstance(item, dict) else item
        if isinstance(value, bool) or value is None:
            return [], "a target is neither a class index nor a name"
        if isinstance(value, int):
            if classes is None or not 0 <= value < len(classes):
                return [], f"class index {value} is not in classes"
            value = classes[value]
        if not isinstance(value, str):
            return [], "a target is neither a class index nor a name"
        names.append(value)
    return names, None


def _collection(rows: list[tuple[str, list[str], str | None]], classnames: list[str] | None, what: str,
                order: list[str] | None = None) -> LabelledCollection:
    """Rows (image, labels, problem) as a collection: multi-label when any row has several labels (or none)."""
    multi = any(len(labels) != 1 for _, labels, problem in rows if problem is None)
    names = list(classnames) if classnames is not None else list(dict.fromkeys(
        [*(order or []), *(name for _, labels, _ in rows for name in labels)]))
    if order is not None and classnames is None:  # only the classes that occur, in the file's order
        present = {name for _, labels, _ in rows for name in labels}
        names = [name for name in names if name in present]
    lookup = {name: index for index, name in enumerate(names)}
    items, label_sets = [], []
    for location, labels, problem in rows:
        unknown = next((name for name in labels if name not in lookup), None)
        error = problem or (f"label {unknown!r} is not one of the classes" if unknown is not None else None)
        if multi:
            items.append(LabelledSource(location, error and f"{what}: {error}", len(items)))
            label_sets.append(tuple(sorted({lookup[name] for name in labels if name in lookup})))
        else:
            target = lookup.get(labels[0], -1) if labels and error is None else -1
            items.append(LabelledSource(location, error and f"{what}: {error}", target))
    if not names:
        raise InputError(f"{what} names no labels")
    return LabelledCollection(names, items, label_sets=label_sets if multi else None)


__all__ = ["is_label_studio_export", "is_fiftyone_labels", "label_studio_export", "fiftyone_labels"]
