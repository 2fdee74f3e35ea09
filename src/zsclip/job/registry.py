"""The one place sources and heads are registered.

``SOURCES``: (kind, matches(inputs, labelled) -> bool, opener(inputs, ...) -> FeatureSource), tried
in order by ``open_source``; the first match opens the input (the openers, in ``openers.py``, are below
this choice and never import it). ``HEADS``: head kind -> class (``zsclip.heads``).
A new source or head is one module plus one line here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from .. import heads
from ..errors import InputError
from . import openers
from .sources import FeatureSource

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


def open_source(inputs, *, labelled: bool = False, classes=None, dataset: str | None = None,
                model: str | None = None) -> FeatureSource:
    """The source ``inputs`` name (one or many paths, folders, globs, URLs, '-', a store, shards,
    a manifest), read as labelled data when ``labelled`` (eval)."""
    if isinstance(inputs, FeatureSource):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("no inputs to classify: give image files, folders, glob patterns, URLs or -")
    for _kind, matches, opener in SOURCES:
        if matches(inputs, labelled):
            return opener(inputs, labelled=labelled, classes=classes, dataset=dataset, model=model)
    raise InputError(f"{inputs[0]}: not an input zsclip can read")


__all__ = ["SOURCES", "HEADS", "open_source"]
