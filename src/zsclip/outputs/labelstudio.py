"""Label Studio: tasks with predictions (JSON, one task per image) and the labelling config that matches them.

Shapes follow Label Studio's import format: a task is ``{"data": {"image": URL}, "predictions": [{
"model_version", "score", "result": [{"from_name", "to_name", "type": "choices", "value": {"choices":
[...]}}]}]}``; a label tree's answer is a ``taxonomy`` result (each label's path from the top level); a
multi-label answer lists every label in one ``choices`` result (the config says ``choice="multiple"``); a
rejected image gets the reject label as its choice ("none of these"), which the config offers too.
The Data Manager sorts tasks by prediction score: the least confident first is the review queue.

``data.image`` is what Label Studio's storage reaches: by default its local-files form,
``/data/local-files/?d=PATH`` with PATH relative to ``image_root`` (Label Studio's
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); ``image_prefix`` may be any URL prefix (a static server, a bucket
behind a proxy). URLs that were classified stay as they are. ``data.path`` keeps the file as zsclip read it,
so an export of the reviewed tasks is a labelled set again (``zsclip.job.labelled``).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import quote

from ..errors import InputError
from ..heads.base import Prediction
from .atomic import AtomicFile, check_writable, write_atomically
from .labelling import LabelSpace
from .text import printable, undecodable_escaped

#: Label Studio serves files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at this path, ``d`` relative to it.
LOCAL_FILES_PREFIX = "/data/local-files/?d="
#: The names the config gives its tags (what ``from_name`` / ``to_name`` of a result refer to).
CHOICES_NAME, TAXONOMY_NAME = "choice", "taxonomy"


def media_key(space: LabelSpace) -> str:
    """The task's data field and object tag: ``video`` for per-video rows, else ``image``."""
    return "video" if space.timed else "image"


def label_config(space: LabelSpace) -> str:
    """The labelling config (XML) whose tags the predictions name: an Image (Video) with Choices, or a
    Taxonomy for a label tree; the reject label is one more choice."""
    key = media_key(space)
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Video" if key == "video" else "Image", name=key, value=f"${key}")
    if space.kind == "tree":
        taxonomy = ElementTree.SubElement(view, "Taxonomy", name=TAXONOMY_NAME, toName=key)
        _tree_choices(taxonomy, space.tree.root.children)
        if space.reject_label is not None:
            ElementTree.SubElement(taxonomy, "Choice", value=space.reject_label)
    else:
        choices = ElementTree.SubElement(view, "Choices", name=CHOICES_NAME, toName=key,
                                         choice="multiple" if space.kind == "multi" else "single-radio",
                                         showInline="false")
        for name in space.choices:
            ElementTree.SubElement(choices, "Choice", value=name)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def _tree_choices(parent: ElementTree.Element, nodes) -> None:
    for node in nodes:
        element = ElementTree.SubElement(parent, "Choice", value=node.name)
        _tree_choices(element, node.children)


def prediction_result(space: LabelSpace, labelled) -> list[dict]:
    """The ``result`` list of one prediction (empty when no label applies: a multi-label answer with none)."""
    key = media_key(space)
    if not labelled.labels:
        return []
    if space.kind == "tree":
        return [{"from_name": TAXONOMY_NAME, "to_name": key, "type": "taxonomy",
                 "value": {"taxonomy": labelled.taxonomy}}]
    return [{"from_name": CHOICES_NAME, "to_name": key, "type": "choices", "value": {"choices": labelled.labels}}]


class LabelStudioSink:
    """Tasks JSON streamed atomically to ``path``; the config written beside it (``NAME.config.xml``) on close.

    Inputs that failed get no task (there is no image to label); they are reported as in any run."""

    def __init__(self, path: str | os.PathLike, space: LabelSpace, *, image_prefix: str | None = None,
                 image_root: str | os.PathLike | None = None) -> None:
        self.path = check_writable(path)
        self.config_path = check_writable(config_path_for(self.path), "labelling config")
        self.space = space
        self.prefix = LOCAL_FILES_PREFIX if image_prefix is None else image_prefix
        self.root = Path(os.path.abspath(image_root if image_root is not None else os.sep))
        self._output = AtomicFile(self.path, "w", encoding="utf-8", newline="")
        self._output.file.write("[")
        self._tasks = 0
        self._seen: set[str] = set()

    def image_url(self, source: str) -> str:
        """Where Label Studio reaches ``source``: URLs as they are; files through the prefix, relative to the root."""
        if source.startswith(("http://", "https://")):
            return source
        absolute = Path(os.path.abspath(source))
        try:
            relative = absolute.relative_to(self.root)
        except ValueError:
            raise InputError(f"{printable(source)} is not under --image-root {printable(self.root)}: give the folder "
                             "Label Studio serves (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)") from None
        return self.prefix + quote(undecodable_escaped(relative.as_posix()), safe="/")

    def task(self, prediction: Prediction) -> dict:
        labelled = self.space.read(prediction)
        key = media_key(self.space)
        return {"data": {key: self.image_url(prediction.source), "path": undecodable_escaped(prediction.source)},
                "predictions": [{"model_version": self.space.model_version, "score": round(labelled.score, 6),
                                 "result": prediction_result(self.space, labelled)}]}

    def write(self, prediction: Prediction) -> None:
        if prediction.error is not None:
            return
        once(self._seen, prediction)
        text = json.dumps(self.task(prediction), ensure_ascii=False)
        self._output.file.write(("\n  " if self._tasks == 0 else ",\n  ") + text)
        self._tasks += 1

    def close(self) -> Path:
        self._output.file.write("\n]\n" if self._tasks else "]\n")
        path = self._output.commit()
        write_atomically(self.config_path, label_config(self.space))
        return path

    def abandon(self) -> Path:
        return self._output.abandon()


def config_path_for(path: Path) -> Path:
    """``tasks.json`` -> ``tasks.config.xml`` (beside it)."""
    return path.with_name(f"{path.stem}.config.xml")


def once(seen: set[str], prediction: Prediction) -> None:
    """Refuse a second row for one file: labelling formats take one label (set) per file, so video clip rows
    must be pooled first."""
    if prediction.source in seen:
        raise InputError(f"{printable(prediction.source)} has several rows (video clips): labelling formats take "
                         "one answer per file: add --per-video")
    seen.add(prediction.source)


__all__ = ["LabelStudioSink", "label_config", "prediction_result", "config_path_for", "LOCAL_FILES_PREFIX"]
