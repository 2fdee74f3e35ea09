"""Label trees and open-set rejection as tasks: images in, per-level rows or tree metrics out.

The math lives in ``zsclip.hierarchy`` (trees, modes, scores, metrics); this module feeds it the
pipeline's feature batches, so trees and rejection get the same decoding, error rows and speed
as flat classification, and the CLI, the service and a Python caller share one implementation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..classifier import ZeroShotClassifier
from ..data.collections import LabelledCollection
from ..data.sources import Source
from ..encoders.base import Encoder
from ..errors import InputError
from ..hierarchy import Rejector, TreeClassifier, evaluate_tree, predict_tree, tree_targets
from ..options import RunOptions
from ..pipeline import feature_batches, labelled_feature_batches
from .classify import expand_sources


@dataclass
class TreeRow:
    """One image's answer over a label tree: ``record`` holds ``levelN`` / ``levelN_probability``
    per level (and ``openset_score`` with a rejector), or ``error`` says why the image failed."""

    source: str
    record: dict = field(default_factory=dict)
    error: str | None = None


def classify_tree(
    items: Sequence[Source],
    tree_classifier: TreeClassifier,
    encoder: Encoder,
    *,
    mode: str = "flat",
    beam: int = 1,
    rejector: Rejector | None = None,
    options: RunOptions | None = None,
) -> Iterator[TreeRow]:
    """Per-level rows for ``items``, in order, streamed batch by batch (errors as rows)."""
    tree_classifier.node_classifier.check_encoder(encoder)
    for names, errors, features in feature_batches(items, encoder, options):
        records = iter(predict_tree(tree_classifier, features, mode, beam, rejector) if len(features) else [])
        for name, error in zip(names, errors, strict=True):
            yield TreeRow(name, {}, error) if error is not None else TreeRow(name, next(records))


def classify_tree_store(store, tree_classifier: TreeClassifier, *, mode: str = "flat", beam: int = 1,
                        rejector: Rejector | None = None) -> Iterator[TreeRow]:
    """Per-level rows for the images of an embedding store (no image decoded), in store order."""
    store.check_classifier(tree_classifier.node_classifier)
    for batch in store.batches():
        features = torch.from_numpy(batch.embeddings)
        records = iter(predict_tree(tree_classifier, features, mode, beam, rejector) if len(features) else [])
        for path, error in zip(batch.paths, batch.errors, strict=True):
            yield TreeRow(path, {}, error) if error is not None else TreeRow(path, next(records))


def calibrate_rejector(
    classifier: ZeroShotClassifier,
    encoder: Encoder,
    known: str | os.PathLike | Iterable[str | os.PathLike | Source],
    *,
    tpr: float = 0.95,
    score: str = "mcm",
    label: str = "none",
    options: RunOptions | None = None,
) -> Rejector:
    """A rejector whose threshold keeps ``tpr`` of the images in ``known`` (images of the named
    classes): the standard way to pick an open-set threshold without seeing unknowns."""
    if not 0 < tpr < 1:
        raise InputError(f"--tpr {tpr}: give a true-positive rate between 0 and 1, e.g. 0.95")
    sources = list(expand_sources(known))
    batches = (features for _, _, features in feature_batches(sources, encoder, options))
    rejector = Rejector.calibrate(classifier, batches, tpr=tpr, score=score, label=label)
    if not rejector.calibration.get("num_images"):
        raise InputError("no calibration image could be read: give a folder of images of the named classes")
    return rejector


def evaluate_tree_collection(
    collection: LabelledCollection,
    tree_classifier: TreeClassifier,
    encoder: Encoder,
    *,
    modes: Sequence[str] = ("flat", "top-down", "chils"),
    beam: int = 1,
    rejector: Rejector | None = None,
    unknown: str | os.PathLike | Iterable[str | os.PathLike | Source] | None = None,
    tpr: float = 0.95,
    options: RunOptions | None = None,
) -> tuple[dict, list[dict]]:
    """(tree metrics per mode, with open-set AUROC / FPR when ``unknown`` images are given; failures).

    The collection's class names (folder names, manifest labels) are matched to tree nodes by name
    or synonym: images of an inner node are scored on the levels down to that node."""
    node_of_class = tree_targets(tree_classifier.tree, collection.classnames)
    failures: list[dict] = []

    def labelled() -> Iterator[tuple[torch.Tensor, list[int]]]:
        for names, errors, targets, features in labelled_feature_batches(collection, encoder, options):
            failures.extend({"path": n, "error": e} for n, e in zip(names, errors, strict=True) if e is not None)
            good = [node_of_class[t] for t, e in zip(targets, errors, strict=True) if e is None]
            yield features, good

    def unknown_batches() -> Iterator[torch.Tensor]:
        for names, errors, features in feature_batches(list(expand_sources(unknown)), encoder, options):
            failures.extend({"path": n, "error": e} for n, e in zip(names, errors, strict=True) if e is not None)
            yield features

    result = evaluate_tree(tree_classifier, labelled(), modes=modes, beam=beam, rejector=rejector,
                           unknown=unknown_batches() if unknown is not None else None, tpr=tpr)
    return result, failures


__all__ = ["TreeRow", "calibrate_rejector", "classify_tree_store", "classify_tree", "evaluate_tree_collection"]
