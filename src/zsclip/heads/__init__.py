"""Heads: normalised image features -> answers, one module per kind.

A head never sees an image: every source (images through the pipeline, shards, manifests,
embedding stores) hands it the same [B, D] features, so every head works on every source.

- ``flat``: top-k over any flat classifier file (built, linear probe, Tip-Adapter);
- ``tree``: a label tree in one of its modes (flat, top-down, chils);
- ``reject``: open-set rejection wrapped around any head;
- ``multilabel``: every label over its own threshold, each scored independently;
- ``files``: which head a classifier file holds (a file may hold any registered head).

A new head is one module here plus one line in ``zsclip.job.registry``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".base": ["Head", "Prediction"],
    ".files": ["FILE_FORMATS", "load_head_file"],
    ".flat": ["FlatHead"],
    ".multilabel": ["MultiLabelClassifier", "MultiLabelHead"],
    ".reject": ["RejectingHead"],
    ".tree": ["TreeHead"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .base import Head, Prediction
    from .files import FILE_FORMATS, load_head_file
    from .flat import FlatHead
    from .multilabel import MultiLabelClassifier, MultiLabelHead
    from .reject import RejectingHead
    from .tree import TreeHead

__all__ = ["Head", "Prediction", "FlatHead", "TreeHead", "RejectingHead", "MultiLabelClassifier",
           "MultiLabelHead", "FILE_FORMATS", "load_head_file"]
