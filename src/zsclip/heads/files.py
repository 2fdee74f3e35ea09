"""Classifier files: which head a file holds, read by the reader registered for its format.

Every format is safetensors with a JSON ``zsclip`` metadata entry whose ``format`` names the kind;
loading never runs code (no pickle) and never imports a task or a fitting method.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..classifier import formats
from ..classifier.files import load_flat
from ..classifier.zeroshot import ZeroShotClassifier, read_metadata
from ..errors import ClassifierFileError

if TYPE_CHECKING:
    from ..hierarchy import TreeClassifier
    from .multilabel import MultiLabelClassifier


def _tree(path: Path) -> TreeClassifier:
    from ..hierarchy import TreeClassifier

    return TreeClassifier.load(path)


def _multilabel(path: Path) -> MultiLabelClassifier:
    from .multilabel import MultiLabelClassifier

    return MultiLabelClassifier.load(path)


#: format name -> reader, each importing its kind's module only when a file of that kind is read (a flat
#: classifier needs no torch). A new kind of classifier file registers its reader here.
FILE_FORMATS: dict[str, Callable[[Path], ZeroShotClassifier | TreeClassifier | MultiLabelClassifier]] = {
    formats.FLAT: ZeroShotClassifier.load,
    formats.TIP_ADAPTER: load_flat,
    formats.TREE: _tree,
    formats.MULTILABEL: _multilabel,
}


def file_format(path: str | os.PathLike) -> str:
    """The ``format`` a classifier file declares (one line naming the file if it has none)."""
    metadata = read_metadata(path)
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if not isinstance(found, str) or found not in FILE_FORMATS:
        raise ClassifierFileError(f"{path}: unsupported classifier format {str(found)[:40]!r} (known: "
                                  f"{', '.join(FILE_FORMATS)}): rebuild it with this zsclip")
    return found


def load_head_file(path: str | os.PathLike) -> ZeroShotClassifier | TreeClassifier | MultiLabelClassifier:
    """A flat classifier (zero-shot, linear probe, Tip-Adapter), a tree classifier or a multi-label
    classifier (labels with thresholds), by its format."""
    return FILE_FORMATS[file_format(path)](Path(path))


__all__ = ["FILE_FORMATS", "file_format", "load_head_file"]
