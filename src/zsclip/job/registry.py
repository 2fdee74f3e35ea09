"""The one place sources and heads are registered.

``SOURCES``: (kind, matches(inputs, labelled) -> bool, opener(inputs, ...) -> FeatureSource), tried
in order; the first match opens the input. ``HEADS``: head kind -> class (``zsclip.heads``).
A new source or head is one module plus one line here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .. import heads
from . import openers

SOURCES = [
    ("store", openers.matches_store, openers.open_store),
    ("shards", openers.matches_shards, openers.open_shards),
    ("hugging face dataset", openers.matches_hf, openers.open_hf),
    ("label studio export", openers.matches_label_studio, openers.open_label_studio),
    ("fiftyone labels", openers.matches_fiftyone, openers.open_fiftyone),
    ("labelled data", openers.matches_labelled, openers.open_labelled),
    ("images", openers.matches_images, openers.open_images),
]


class _HeadKinds(Mapping):
    """head kind -> class, each imported from ``zsclip.heads`` on first use: a job with a flat head never
    loads the modules (and torch) of the others."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names

    def __getitem__(self, kind: str) -> type[heads.Head]:
        return getattr(heads, self._names[kind])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


HEADS = _HeadKinds({"flat": "FlatHead", "tree": "TreeHead", "reject": "RejectingHead", "multilabel": "MultiLabelHead"})

__all__ = ["SOURCES", "HEADS"]
