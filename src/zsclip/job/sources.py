"""Sources: where a job's features come from, one class per kind of input.

Every source yields ``FeatureBatch``es: the ids of a batch's inputs in order, the error of each
(None = it has features), the L2-normalised features [n_ok, D] of those without an error, and,
for labelled sources, each input's class index (-1 = none). Images go through the one pipeline
(zsclip.pipeline); a store needs no model at all. A new source is a class here (or a module
beside it) plus one line in ``zsclip.job.registry``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..data.collections import LabelledCollection
from ..data.shards import is_shards
from ..data.sources import Source
from ..encoders.base import Encoder
from ..errors import InputError
from ..options import RunOptions
from ..pipeline import feature_batches, labelled_feature_batches


@dataclass
class FeatureBatch:
    """One batch of a source: ``ids`` and ``errors`` per input, ``features`` [n_ok, D] for the
    inputs without an error (in order), ``targets`` per input for labelled sources (else None)."""

    ids: list[str]
    errors: list[str | None]
    features: torch.Tensor
    targets: list[int] | None = None

    def good_targets(self) -> list[int]:
        """The class index of each input that has features, in order."""
        assert self.targets is not None
        return [t for t, e in zip(self.targets, self.errors, strict=True) if e is None]


class FeatureSource(ABC):
    """A job's input. ``needs_model``: whether features come from running the image tower."""

    kind: ClassVar[str]
    needs_model: ClassVar[bool] = True
    #: class names of a labelled source (targets index them), else None
    classnames: list[str] | None = None
    #: the precision features are stored at (a float16 store), which calibration must match
    feature_dtype: torch.dtype | None = None
    #: the model a source was made with, when it records one (a store)
    model: str | None = None
    pretrained: str | None = None
    #: the fingerprint of that model (config + weights digest), when the source records it: a classifier
    #: cached for it answers without loading the model
    fingerprint: str | None = None

    @property
    def labelled(self) -> bool:
        return self.classnames is not None

    @abstractmethod
    def __len__(self) -> int:
        """How many inputs (for progress); 0 when unknown up front (shards are streamed)."""

    @abstractmethod
    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        """The features in this process."""

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        """The features computed on Ray (``settings``: zsclip.cluster.RaySettings), same rows and order."""
        raise InputError(f"{self.describe()} cannot run on Ray yet: run it without --ray")

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse a model whose features would not match this source's (stores check theirs)."""
        return None

    def check_classifier(self, classifier) -> None:
        """Refuse a classifier of another model than this source's features (stores check theirs)."""
        return None

    def describe(self) -> str:
        return self.kind


class ImageFiles(FeatureSource):
    """Image files, folders, globs, URLs (already expanded into ``Source``s), through the pipeline."""

    kind = "images"

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        for names, errors, features in feature_batches(self.sources, encoder, options):
            yield FeatureBatch(names, errors, features)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.runner import encoded_batches

        for names, errors, features, _ in encoded_batches(self.sources, encoder, options, settings):
            yield FeatureBatch(names, errors, features)


class LabelledData(FeatureSource):
    """A class-per-folder tree, a CSV/JSONL manifest or WebDataset shards. Unlabelled shards
    (``labelled=False``: classify, embed) are read without their labels."""

    kind = "labelled data"

    def __init__(self, collection: LabelledCollection, labelled: bool = True) -> None:
        self.collection = collection
        self.classnames = list(collection.classnames) if labelled else None
        self.kind = "shards" if collection.shards else "labelled data"

    def __len__(self) -> int:
        return len(self.collection.items)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        for names, errors, targets, features in labelled_feature_batches(self.collection, encoder, options):
            yield FeatureBatch(names, errors, features, list(targets) if self.labelled else None)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.runner import encoded_batches

        collection = self.collection
        for names, errors, features, targets in encoded_batches(
                collection.items, encoder, options, settings, shards=collection.shards,
                classnames=collection.classnames if self.labelled else ()):
            yield FeatureBatch(names, errors, features, targets if self.labelled else None)


class StoreSource(FeatureSource):
    """An embedding store (or a clip-retrieval output): stored features, no image decoded, no model."""

    kind = "store"
    needs_model = False

    def __init__(self, store, batch_size: int = 8192) -> None:
        self.store = store
        self.batch_size = batch_size
        self.classnames = list(store.classnames) if store.classnames else None
        self.feature_dtype = torch.float16 if store.dtype == "float16" else torch.float32
        self.model, self.pretrained = store.model, store.pretrained
        self.fingerprint = getattr(store, "fingerprint", None)

    def __len__(self) -> int:
        return len(self.store)

    def unlabelled(self) -> StoreSource:
        """The same store read without its labels (classify does not need them)."""
        copy = StoreSource(self.store, self.batch_size)
        copy.classnames = None
        return copy

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        for batch in self.store.batches(self.batch_size):
            yield FeatureBatch(list(batch.paths), list(batch.errors), torch.from_numpy(np.ascontiguousarray(
                batch.embeddings, dtype=np.float32)), list(batch.labels) if self.labelled else None)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.runner import store_batches

        for paths, errors, features, labels in store_batches(self.store, settings, self.batch_size):
            yield FeatureBatch(paths, errors, features, labels if self.labelled else None)

    def check_encoder(self, encoder: Encoder) -> None:
        self.store.check_encoder(encoder)

    def check_classifier(self, classifier) -> None:
        self.store.check_classifier(classifier)

    def describe(self) -> str:
        return f"store of {self.model}"


def is_store(path: str | os.PathLike) -> bool:
    """True for a folder holding a zsclip store (local or at a pyarrow filesystem URI) or a
    clip-retrieval output."""
    from ..store.format import MANIFEST, StoreError

    folder = os.fspath(path)
    if "://" in folder and not folder.lower().startswith(("http://", "https://")):
        from ..store.location import Location

        try:
            return Location(folder).exists(MANIFEST)
        except StoreError:
            return False
    return os.path.isdir(folder) and (os.path.isfile(os.path.join(folder, MANIFEST))
                                      or os.path.isdir(os.path.join(folder, "img_emb")))


def require_labels(source: FeatureSource, what: str) -> None:
    if not source.labelled:
        raise InputError(f"{what} needs labelled data: a class-per-folder tree, a path,label manifest, shards "
                         "with --labels-file, or a store made with `zsclip embed --labelled`")


__all__ = ["FeatureBatch", "FeatureSource", "ImageFiles", "LabelledData", "StoreSource", "is_store", "is_shards",
           "require_labels"]
