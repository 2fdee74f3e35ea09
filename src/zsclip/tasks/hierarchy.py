"""Label trees and open-set rejection under their round-2 names: each is the one job with a tree
head (``zsclip.heads.TreeHead``) or a rejector (``RejectingHead``) on an image or store source, so
trees and rejection get the same decoding, error rows and speed as flat classification."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from ..classifier import ZeroShotClassifier
from ..data.collections import LabelledCollection
from ..data.sources import Source
from ..encoders.base import Encoder
from ..errors import InputError
from ..heads import Prediction, RejectingHead, TreeHead
from ..hierarchy import Rejector, TreeClassifier
from ..job import ImageFiles, Job, StoreSource, features, open_source
from ..options import RunOptions
from .classify import answers
from .evaluate import evaluate


def classify_tree(items: Sequence[Source], tree_classifier: TreeClassifier, encoder: Encoder, *, mode: str = "flat",
                  beam: int = 1, rejector: Rejector | None = None,
                  options: RunOptions | None = None) -> Iterator[Prediction]:
    """Per-level rows (``Prediction.record``) for ``items``, in order, streamed (errors as rows)."""
    tree_classifier.node_classifier.check_encoder(encoder)
    head = TreeHead(tree_classifier, mode, beam)
    return answers(Job(ImageFiles(items), head if rejector is None else RejectingHead(head, rejector), encoder,
                       options or RunOptions()))


def classify_tree_store(store, tree_classifier: TreeClassifier, *, mode: str = "flat", beam: int = 1,
                        rejector: Rejector | None = None) -> Iterator[Prediction]:
    """Per-level rows for the images of an embedding store (no image decoded), in store order."""
    store.check_classifier(tree_classifier.node_classifier)
    head = TreeHead(tree_classifier, mode, beam)
    return answers(Job(StoreSource(store).unlabelled(), head if rejector is None else RejectingHead(head, rejector),
                       None, RunOptions()))


def calibrate_rejector(classifier: ZeroShotClassifier, encoder: Encoder,
                       known: str | os.PathLike | Iterable[str | os.PathLike | Source], *, tpr: float = 0.95,
                       score: str = "mcm", label: str = "none", options: RunOptions | None = None) -> Rejector:
    """A rejector whose threshold keeps ``tpr`` of the images in ``known`` (images of the named
    classes): the standard way to pick an open-set threshold without seeing unknowns."""
    if not 0 < tpr < 1:
        raise InputError(f"--tpr {tpr}: give a true-positive rate between 0 and 1, e.g. 0.95")
    batches = (batch.features for batch in features(open_source(known), encoder, options or RunOptions()))
    rejector = Rejector.calibrate(classifier, batches, tpr=tpr, score=score, label=label)
    if not rejector.calibration.get("num_images"):
        raise InputError("no calibration image could be read: give a folder of images of the named classes")
    return rejector


def evaluate_tree_collection(collection: LabelledCollection, tree_classifier: TreeClassifier, encoder: Encoder, *,
                             modes: Sequence[str] = ("flat", "top-down", "chils"), beam: int = 1, unknown=None,
                             tpr: float = 0.95, options: RunOptions | None = None) -> tuple[dict, list[dict]]:
    """(tree metrics per mode, with open-set AUROC / FPR when ``unknown`` images are given; failures)."""
    result = evaluate(collection, encoder, classifier=tree_classifier, tree_modes=modes,
                      beam=beam if beam != 1 else None, unknown=unknown, tpr=tpr, options=options)
    out = {"modes": result.tree["modes"], "beam": result.tree["beam"]}
    if result.openset is not None:
        out["openset"] = result.openset
    return out, result.failures


__all__ = ["calibrate_rejector", "classify_tree_store", "classify_tree", "evaluate_tree_collection"]
