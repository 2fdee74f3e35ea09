"""A job: a source, a head, a runner (and the model when one is needed), planned from options.

``plan`` is where every entry point's options meet: it opens the source, refuses combinations
that cannot run (in one line, before a model loads), resolves the model (a store's own, a
classifier file's own, the one named, or the default), builds the head and checks that the head,
the model and the source's features all belong together. ``features`` runs the source on its
runner: this process, or Ray.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import InputError
from ..heads import Head
from ..options import RunOptions
from .heads import HeadOptions, build_head, cached_classifier
from .sources import FeatureBatch, FeatureSource, StoreSource, is_store

if TYPE_CHECKING:
    from ..encoders.base import Encoder


@dataclass
class Job:
    """What runs: ``source`` -> (``runner``) -> features -> ``head``. ``ray`` is None for this
    process, else the zsclip.cluster.RaySettings to run on."""

    source: FeatureSource
    head: Head | None
    encoder: Encoder | None
    run: RunOptions
    ray: object = None

    def features(self) -> Iterator[FeatureBatch]:
        return features(self.source, self.encoder, self.run, self.ray)


def features(source: FeatureSource, encoder: Encoder | None, run: RunOptions, ray=None) -> Iterator[FeatureBatch]:
    """The source's feature batches, in this process or on Ray."""
    if ray is None:
        return source.batches(encoder, run)
    return source.ray_batches(encoder, run, ray)


def ray_settings(ray) -> object:
    """RaySettings from what a caller gave: None (local), True / "auto", an address, or settings."""
    if ray is None or ray is False:
        return None
    from ..cluster import RaySettings, connect

    settings = ray if isinstance(ray, RaySettings) else RaySettings(address="auto" if ray is True else str(ray))
    connect(settings)
    return settings


def check_ray(source: FeatureSource, ray) -> None:
    """Refuse a source the Ray runner cannot distribute, before anything runs."""
    if ray is None or not isinstance(source, StoreSource):
        return
    from ..store.clip_retrieval import ClipRetrievalStore

    if isinstance(source.store, ClipRetrievalStore):
        raise InputError("a clip-retrieval output is read in this process: leave out --ray (reading it is one pass "
                         "over memory-mapped arrays)")


def resolve_encoder(source: FeatureSource, head: HeadOptions | None, *, encoder: Encoder | None = None,
                    model: str | None = None, pretrained: str | None = None, run: RunOptions,
                    needs_model: bool | None = None, ray=None) -> Encoder | None:
    """The model this job needs, or None when nothing needs one (stored features and a classifier file).

    Which model: ``encoder`` as given; else for a store its own model (``model`` naming another is
    refused); else a classifier file's model; else ``model`` / ``pretrained`` or the default. With
    ``ray`` (RaySettings) and a source encoded by Ray's actor pool, the pool starts before this
    process loads its own copy."""
    from ..encoders.resolve import default_weights, resolve_model

    if needs_model is None:
        needs_model = source.needs_model or (head is not None and (
            head.needs_text_tower or head.reject_calibrate is not None
            or (head.calibrate is not None and not is_stored(head.calibrate))))
    if source.model is not None and model is not None and model != source.model:
        raise InputError(f"the store holds embeddings of {source.model}, not {model}: leave out --model (the store's "
                         f"own model is used), or embed the images with {model} into another store")
    if encoder is not None or not needs_model:
        return encoder
    if source.model is not None:
        model, pretrained = source.model, pretrained or source.pretrained
    elif model is None and head is not None and head.classifier is not None:
        model, file_pretrained = head.classifier_model()
        pretrained = pretrained or file_pretrained
    if not source.needs_model:  # stored features need no model: say why one loads
        say(f"zsclip: loading model {model} for its text tower ({_why(head)})")
    if ray is not None and source.pooled_on_ray:
        from ..cluster.pipeline import prestart

        prestart(*default_weights(model, pretrained), run, ray)
    return resolve_model(model, pretrained, run)


def _why(head: HeadOptions | None) -> str:
    if head is None:
        return "a text query"
    if head.reject_calibrate is not None:
        return "calibration images"
    if head.labels_tree is not None:
        return "a label tree"
    if head.descriptions is not None:
        return "class descriptions"
    return "labels not in the classifier cache for this model"


def say(line: str) -> None:
    """One line on stderr when a person watches (``_verbose``)."""
    if _verbose():
        print(line, file=sys.stderr)


def from_cache(source: FeatureSource, head_options: HeadOptions, run: RunOptions, *, cache: bool = True,
               cache_dir=None) -> HeadOptions:
    """``head_options`` answered by a classifier file when the cache holds the flat classifier of its labels
    for the model of ``source``'s stored features (a store records its model's fingerprint): then the job
    loads no model. Otherwise ``head_options`` as given."""
    if source.needs_model or source.fingerprint is None or head_options.reject_calibrate is not None:
        return head_options
    hit = cached_classifier(head_options, source.fingerprint, run, cache=cache, cache_dir=cache_dir,
                            embed_dim=source.embed_dim)
    if hit is None:
        return head_options
    say(f"zsclip: classifier for these labels cached for {source.model}: no model loaded")
    return replace(head_options, labels=None, templates=None, classifier=hit)


def _verbose() -> bool:
    """Say what loads when a person watches (stderr is a terminal) and ZSCLIP_QUIET is not set."""
    return sys.stderr.isatty() and os.environ.get("ZSCLIP_QUIET", "") in ("", "0")


def calibration_for(encoder: Encoder | None, run: RunOptions):
    """How a head gets its calibration images (``zsclip.job.heads.Calibration``), encoded by
    ``encoder`` in this process: a rejector's images (``label_names`` None: feature tensors), or
    labelled multi-label data (FeatureBatches with label sets indexing ``label_names``)."""

    def calibration(images, label_names=None) -> Iterator:
        from .registry import open_source
        from .sources import require_labels

        if label_names is None:  # a rejector's images of the known classes
            for batch in features(open_source(images), encoder, run, None):
                yield batch.features
            return
        calibration_source = calibration_data(images, label_names)
        require_labels(calibration_source, "--calibrate", multi_label=True)
        yield from features(calibration_source, encoder, run, None)

    return calibration


def calibration_data(images, label_names) -> FeatureSource:
    """Labelled images to calibrate multi-label thresholds on, with ``label_names`` (the head's) as
    their labels: a manifest read with those names, or a multi-label store (no image decoded) whose
    label sets are mapped onto them by name."""
    from .registry import open_source

    if is_stored(images):
        source = open_source(images, labelled=True)
        return source.with_classes(label_names) if isinstance(source, StoreSource) and source.multi_label else source
    return open_source(images, labelled=True, classes=[[name] for name in label_names])


def is_stored(data) -> bool:
    """Whether ``data`` is stored features (a store, or a store source): calibrating on it needs no model."""
    return isinstance(data, StoreSource) or (isinstance(data, (str, os.PathLike)) and is_store(data))


def plan(source: FeatureSource, head_options: HeadOptions, *, encoder: Encoder | None = None,
         model: str | None = None, pretrained: str | None = None, run: RunOptions | None = None,
         cache: bool = True, cache_dir=None, ray=None, encoding_actors: bool = True) -> Job:
    """A runnable job for ``source`` answered by the head ``head_options`` describe. ``encoding_actors``: with
    ``ray``, start the encoding actor pool while this process loads its model (False for a job whose actors
    are its own, such as explanations)."""
    run = run or RunOptions()
    head_options.check()
    settings = ray_settings(ray)
    check_ray(source, settings)
    if encoder is None:
        head_options = from_cache(source, head_options, run, cache=cache, cache_dir=cache_dir)
    encoder = resolve_encoder(source, head_options, encoder=encoder, model=model, pretrained=pretrained, run=run,
                              ray=settings if encoding_actors else None)
    if encoder is not None:
        source.check_encoder(encoder)

    head = build_head(head_options, encoder, run, cache=cache, cache_dir=cache_dir,
                      calibration=calibration_for(encoder, run),
                      feature_dtype=source.feature_dtype)
    source.check_classifier(head.classifier)
    if encoder is not None:
        head.check_encoder(encoder)
    return Job(source, head, encoder, run, settings)


__all__ = ["Job", "plan", "features", "resolve_encoder", "from_cache", "say", "ray_settings", "check_ray",
           "calibration_for", "calibration_data"]
