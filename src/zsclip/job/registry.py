"""The one place sources and heads are registered.

``SOURCES``: (kind, matches(inputs, labelled) -> bool, opener(inputs, ...) -> FeatureSource), tried
in order; the first match opens the input. ``HEADS``: head kind -> class (``zsclip.heads``).
A new source or head is one module plus one line here.
"""

from __future__ import annotations

from ..heads import FlatHead, MultiLabelHead, RejectingHead, TreeHead
from . import openers

SOURCES = [
    ("store", openers.matches_store, openers.open_store),
    ("shards", openers.matches_shards, openers.open_shards),
    ("hugging face dataset", openers.matches_hf, openers.open_hf),
    ("labelled data", openers.matches_labelled, openers.open_labelled),
    ("images", openers.matches_images, openers.open_images),
]

HEADS = {"flat": FlatHead, "tree": TreeHead, "reject": RejectingHead, "multilabel": MultiLabelHead}

__all__ = ["SOURCES", "HEADS"]
