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
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..data.collections import LabelledCollection
from ..data.shards import is_shards
from ..data.sources import Source
from ..errors import InputError
from ..options import RunOptions
from ..store.ahead import read_ahead

if TYPE_CHECKING:
    import torch

    from ..encoders.base import Encoder


@dataclass
class FeatureBatch:
    """One batch of a source: ``ids`` and ``errors`` per input, ``features`` [n_ok, D] for the
    inputs without an error (in order), ``targets`` per input for labelled sources (else None).

    ``values`` are the features as the source made them: a tensor from a model, a numpy array from a
    store (heads that compute in numpy take it as is: no torch); ``features`` is always a tensor."""

    ids: list[str]
    errors: list[str | None]
    values: torch.Tensor | np.ndarray
    targets: list[int] | None = None
    #: multi-label sources: the label indices of each input (``targets`` is then None)
    label_sets: list[tuple[int, ...]] | None = None
    #: per input, the (start, end) seconds of a video clip, None for a photo; None when no input is a video
    spans: list[tuple[float, float] | None] | None = None
    #: per input, the identity files are matched by: a store row's recorded absolute path (``ids`` are the
    #: names given when it was embedded, maybe relative to another folder); None: ``ids`` are as given now
    keys: list[str] | None = None

    @property
    def features(self) -> torch.Tensor:
        """The features as a tensor (a store's array is wrapped, not copied)."""
        if isinstance(self.values, np.ndarray):
            import torch

            self.values = torch.from_numpy(self.values)
        return self.values

    def good_label_sets(self) -> list[tuple[int, ...]]:
        """The label indices of each input that has features, in order."""
        assert self.label_sets is not None
        return [s for s, e in zip(self.label_sets, self.errors, strict=True) if e is None]

    def good_targets(self) -> list[int]:
        """The class index of each input that has features, in order."""
        assert self.targets is not None
        return [t for t, e in zip(self.targets, self.errors, strict=True) if e is None]


class FeatureSource(ABC):
    """A job's input. ``needs_model``: whether features come from running the image tower."""

    kind: ClassVar[str]
    needs_model: ClassVar[bool] = True
    #: whether rows carry a time span (video clips): sinks then write start and end columns
    timed: ClassVar[bool] = False
    #: whether Ray encodes this source in the actor pool (its actors can start while the driver loads)
    pooled_on_ray: ClassVar[bool] = False
    #: class names of a labelled source (targets index them), else None
    classnames: list[str] | None = None
    #: the precision features are stored at ("float16": a half-precision store), which calibration must match
    feature_dtype: str | None = None
    #: the model a source was made with, when it records one (a store)
    model: str | None = None
    pretrained: str | None = None
    #: the fingerprint of that model (config + weights digest), when the source records it: a classifier
    #: cached for it answers without loading the model
    fingerprint: str | None = None
    #: the width of its features when the source records it (a store), checked against a cached classifier
    embed_dim: int | None = None

    #: whether each input holds a set of labels (a multi-label manifest or store) instead of one class
    multi_label: bool = False

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
    pooled_on_ray = True

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        from ..pipeline import feature_batches

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
    pooled_on_ray = True

    def __init__(self, collection: LabelledCollection, labelled: bool = True) -> None:
        self.collection = collection
        self.classnames = list(collection.classnames) if labelled else None
        self.kind = "shards" if collection.shards else "labelled data"
        self.multi_label = labelled and collection.multi_label

    def __len__(self) -> int:
        return len(self.collection.items)

    def _batch(self, names, errors, features, targets) -> FeatureBatch:
        if self.multi_label:  # targets are item positions: each item's label set
            sets = self.collection.label_sets
            return FeatureBatch(list(names), list(errors), features, None, [sets[int(t)] for t in targets])
        return FeatureBatch(list(names), list(errors), features, list(targets) if self.labelled else None)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        from ..pipeline import labelled_feature_batches

        for names, errors, targets, features in labelled_feature_batches(self.collection, encoder, options):
            yield self._batch(names, errors, features, targets)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.runner import encoded_batches

        collection = self.collection
        for names, errors, features, targets in encoded_batches(
                collection.items, encoder, options, settings, shards=collection.shards,
                classnames=collection.classnames if self.labelled else ()):
            yield self._batch(names, errors, features, targets)


class MediaFiles(FeatureSource):
    """Photos and videos (files, folders, globs; labelled by class folder or manifest, or not): a
    row per photo, per video (``RunOptions.frames`` sampled frames pooled) or per video segment
    (``RunOptions.segment``), each video row with its span in seconds (``zsclip.pipeline.media``)."""

    kind = "videos"
    #: rows carry start and end seconds (sinks add the columns)
    timed = True

    def __init__(self, items: Sequence[Source], classnames: Sequence[str] | None = None) -> None:
        self.items = list(items)
        self.classnames = list(classnames) if classnames is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        from ..pipeline.media import media_feature_batches

        for batch in media_feature_batches(self.items, encoder, options):
            yield FeatureBatch(batch.ids, batch.errors, batch.features, batch.targets if self.labelled else None,
                               spans=batch.spans)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.media import ray_media_batches

        for batch in ray_media_batches(self.items, encoder, options, settings):
            yield FeatureBatch(batch.ids, batch.errors, batch.features, batch.targets if self.labelled else None,
                               spans=batch.spans)


class HFTableSource(FeatureSource):
    """A Hugging Face split in Parquet or save_to_disk Arrow files (``zsclip.data.hf``), streamed by
    row group; labelled by its ClassLabel column (class names from the schema's features)."""

    kind = "hugging face dataset"

    def __init__(self, table, labelled: bool = True) -> None:
        self.table = table
        self.classnames = list(table.classnames) if labelled and table.classnames else None

    def __len__(self) -> int:
        return self.table.rows

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        from ..pipeline.hfdata import table_feature_batches

        for names, errors, targets, features in table_feature_batches(self.table, encoder, options):
            yield FeatureBatch(names, errors, features, list(targets) if self.labelled else None)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.media import ray_table_batches

        for names, errors, targets, features in ray_table_batches(self.table, encoder, options, settings):
            yield FeatureBatch(names, errors, features, list(targets) if self.labelled else None)

    def describe(self) -> str:
        return f"Hugging Face dataset {self.table.root}"


class PerVideo(FeatureSource):
    """Another source's video clips pooled into one row per video (``--per-video``): a video's
    consecutive clip rows (a store of ``--segment`` rows, or ``--segment`` on files) become one row
    spanning them, the duration-weighted mean of their normalised embeddings, normalised again.
    Rows without a span (photos) pass through; a video whose clips all failed keeps its first error."""

    kind = "per-video"
    timed = True

    def __init__(self, inner: FeatureSource) -> None:
        self.inner = inner
        self.needs_model = inner.needs_model
        self.classnames, self.feature_dtype = inner.classnames, inner.feature_dtype
        self.model, self.pretrained = inner.model, inner.pretrained

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, encoder: Encoder | None, options: RunOptions) -> Iterator[FeatureBatch]:
        return pooled_videos(self.inner.batches(encoder, options))

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        return pooled_videos(self.inner.ray_batches(encoder, options, settings))

    def check_encoder(self, encoder: Encoder) -> None:
        self.inner.check_encoder(encoder)

    def check_classifier(self, classifier) -> None:
        self.inner.check_classifier(classifier)

    def describe(self) -> str:
        return f"{self.inner.describe()}, per video"


def pooled_videos(batches: Iterator[FeatureBatch]) -> Iterator[FeatureBatch]:
    """One row per video from consecutive clip rows of the same id (see ``PerVideo``)."""
    import torch

    current: dict | None = None  # the video being pooled: id, target, spans, weighted sum, first error

    def finish(video: dict, out: dict) -> None:
        out["ids"].append(video["id"])
        out["targets"].append(video["target"])
        out["spans"].append((video["start"], video["end"]))
        if video["sum"] is None:
            out["errors"].append(video["error"] or "no frame decoded")
        else:
            out["errors"].append(None)
            out["features"].append(torch.nn.functional.normalize(video["sum"], dim=-1))

    for batch in batches:
        out: dict = {"ids": [], "errors": [], "features": [], "targets": [], "spans": []}
        features = iter(batch.features)
        targets = batch.targets or [-1] * len(batch.ids)
        spans = batch.spans or [None] * len(batch.ids)
        for name, error, target, span in zip(batch.ids, batch.errors, targets, spans, strict=True):
            vector = next(features) if error is None else None
            if current is not None and (span is None or name != current["id"]):
                finish(current, out)
                current = None
            if span is None:
                out["ids"].append(name)
                out["errors"].append(error)
                out["targets"].append(target)
                out["spans"].append(None)
                if vector is not None:
                    out["features"].append(vector)
                continue
            if current is None:
                current = {"id": name, "target": target, "start": span[0], "end": span[1], "sum": None, "error": None}
            current["start"], current["end"] = min(current["start"], span[0]), max(current["end"], span[1])
            if vector is None:
                current["error"] = current["error"] or error
                continue
            weighted = vector.float() * max(span[1] - span[0], 1e-6)
            current["sum"] = weighted if current["sum"] is None else current["sum"] + weighted
        if out["ids"]:
            yield _pooled_batch(out, batch.features, batch.targets is not None)
    if current is not None:
        out = {"ids": [], "errors": [], "features": [], "targets": [], "spans": []}
        finish(current, out)
        yield _pooled_batch(out, torch.empty(0, 0), True)


def _pooled_batch(out: dict, like: torch.Tensor, labelled: bool) -> FeatureBatch:
    import torch

    width = out["features"][0].shape[-1] if out["features"] else (like.shape[1] if like.dim() == 2 else 0)
    features = torch.stack(out["features"]) if out["features"] else torch.empty(0, width)
    return FeatureBatch(out["ids"], out["errors"], features, out["targets"] if labelled else None, spans=out["spans"])


def has_videos(sources: Sequence[Source]) -> bool:
    from ..data.video import is_video_name

    return any(source.error is None and is_video_name(source.name) for source in sources)


class StoreSource(FeatureSource):
    """An embedding store (or a clip-retrieval output): stored features, no image decoded, no model."""

    kind = "store"
    needs_model = False

    def __init__(self, store, batch_size: int = 8192) -> None:
        self.store = store
        self.batch_size = batch_size
        self.classnames = list(store.classnames) if store.classnames else None
        self.feature_dtype = "float16" if store.dtype == "float16" else "float32"
        self.model, self.pretrained = store.model, store.pretrained
        self.multi_label = bool(getattr(store, "multi_label", False)) and self.classnames is not None
        #: store class index -> index among ``classnames`` (None: the same), see ``with_classes``
        self._mapping: list[int | None] | None = None
        self.timed = bool(getattr(store, "timed", False))
        self.fingerprint = getattr(store, "fingerprint", None)
        self.embed_dim = getattr(store, "embed_dim", None)

    def __len__(self) -> int:
        return len(self.store)

    def unlabelled(self) -> StoreSource:
        """The same store read without its labels (classify does not need them)."""
        copy = StoreSource(self.store, self.batch_size)
        copy.classnames = None
        copy.multi_label = False
        return copy

    def with_classes(self, names: Sequence[str]) -> StoreSource:
        """A multi-label store read with ``names`` as its labels (a head's, to calibrate on): label sets
        index ``names``, and a row holding a label that is not among them is an error row, as it is in
        a manifest opened with those names (``zsclip.data.collections.multilabel_manifest``)."""
        assert self.multi_label
        copy = StoreSource(self.store, self.batch_size)
        lookup = {name: index for index, name in enumerate(names)}
        copy.classnames = list(names)
        copy._mapping = [lookup.get(name) for name in self.classnames]
        return copy

    def _batch(self, paths, errors, features: torch.Tensor | np.ndarray, labels, label_sets,
               spans=None, keys=None) -> FeatureBatch:
        if not self.multi_label:
            return FeatureBatch(list(paths), list(errors), features, list(labels) if self.labelled else None,
                                spans=spans, keys=keys)
        errors, label_sets = list(errors), [tuple(s) for s in label_sets]
        if self._mapping is not None:
            kept = []  # per row that has features: whether it keeps them
            for i, labels_of in enumerate(label_sets):
                mapped = [self._mapping[label] for label in labels_of]
                if errors[i] is not None:
                    continue
                if None in mapped:
                    unknown = self.store.classnames[labels_of[mapped.index(None)]]
                    errors[i] = f"label {unknown!r} is not one of the labels"
                kept.append(errors[i] is None)
                label_sets[i] = tuple(sorted(m for m in mapped if m is not None))
            features = features[np.array(kept, dtype=bool)] if kept else features
        return FeatureBatch(list(paths), errors, features, None, label_sets, keys=keys)

    def batches(self, encoder: Encoder | None, options: RunOptions, *, ahead: bool = True) -> Iterator[FeatureBatch]:
        """The store's rows a batch at a time; ``ahead``: the next batch read on a thread while this one is
        answered (False for a caller that advances this generator on its own worker threads)."""
        rows = self.store.batches(self.batch_size)
        for batch in read_ahead(rows) if ahead else rows:
            features = np.ascontiguousarray(batch.embeddings, dtype=np.float32)
            yield self._batch(batch.paths, batch.errors, features, batch.labels, batch.label_sets,
                              getattr(batch, "spans", None) if self.timed else None, batch.keys)

    def ray_batches(self, encoder: Encoder | None, options: RunOptions, settings) -> Iterator[FeatureBatch]:
        from ..cluster.runner import store_batches

        spans: list = []
        keys: list = []
        for paths, errors, features, labels, label_sets in store_batches(self.store, settings, self.batch_size,
                                                                         spans=spans, keys=keys):
            times = spans.pop(0)
            yield self._batch(paths, errors, features, labels, label_sets, times if self.timed else None, keys.pop(0))

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


def require_labels(source: FeatureSource, what: str, multi_label: bool = False) -> None:
    if source.labelled and source.multi_label != multi_label:
        raise InputError(f"{what} needs one class per image, and this data holds several labels per image: add "
                         "--multi-label" if source.multi_label else
                         f"{what} with --multi-label needs several labels per image: a manifest with a 'labels' "
                         "column (\"dog;cat\") or a JSONL 'labels' list, or a store embedded from one")
    if not source.labelled:
        raise InputError(f"{what} needs labelled data: a class-per-folder tree, a path,label manifest, shards "
                         "with --labels-file, or a store made with `zsclip embed --labelled`")


__all__ = ["FeatureBatch", "FeatureSource", "ImageFiles", "LabelledData", "MediaFiles", "HFTableSource", "PerVideo",
           "has_videos", "StoreSource", "is_store", "is_shards", "require_labels"]
