"""From head options to a head: what the CLI, the Python API and the service all call.

``HeadOptions`` says which head a user asked for (labels, a classifier file, a label tree, a
rejector around either); ``check`` refuses combinations that cannot apply before any model is
loaded; ``build_head`` makes the head (building or loading classifiers, calibrating a rejector on
features of known images at the precision of the features it will judge).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._lazy import is_loaded_instance
from ..classifier import ZeroShotClassifier, formats
from ..errors import InputError, ZsclipWarning
from ..heads import Head, load_head_file
from ..hierarchy.names import DEFAULT_REJECT_LABEL, MODES, SCORES
from ..options import RunOptions
from ..prompts import resolve_classes, resolve_templates

if TYPE_CHECKING:
    from ..encoders.base import Encoder
    from ..hierarchy import Rejector

DEFAULT_TOP_K = 5
DEFAULT_TPR = 0.95


@dataclass
class HeadOptions:
    """Which head answers. Unset options (None) are the ones the user did not give: an option given
    where it cannot apply is refused by ``check``, never ignored."""

    labels: object = None                 # class names / synonym lists / a named list ("imagenet1k")
    classifier: object = None             # a classifier file (flat, adapted or tree) or a classifier object
    templates: object = None
    descriptions: object = None           # class -> sentences, or a CuPL JSON file
    labels_tree: object = None            # a tree file, or a LabelTree
    tree_mode: str | None = None
    beam: int | None = None
    reject: float | None = None
    reject_calibrate: object = None       # a FeatureSource of images of the named classes
    tpr: float | None = None
    reject_score: str | None = None
    reject_label: str | None = None
    top_k: int | None = None
    scale: float | None = None
    multi_label: bool | None = None       # every label over its own threshold (zsclip.heads.multilabel)
    multi_score: str | None = None        # negative / standardised / sigmoid / softmax
    threshold: float | None = None        # one fixed threshold for every label
    calibrate: object = None              # a multi-label manifest (or source) to calibrate thresholds on
    target_precision: float | None = None  # calibrate for this precision per label (else the best F1)
    accept_precision: float | None = None  # accept-or-review at this precision (a calibrated classifier file)
    transductive: str | None = None        # a collection-level correction (zsclip.calibration.transductive)

    def _read_files(self) -> None:
        """Read a label tree file and a descriptions file here, once, and keep what they hold: a bad one is
        its one line before a model loads, and the head is built from the parsed values (which every
        builder takes as it takes a path)."""
        self.labels_tree, self.descriptions = read_head_files(self.labels_tree, self.descriptions)

    def check(self) -> None:
        """Refuse what cannot apply, in one line, before any model is loaded."""
        self._check_multi_label()
        if self.classifier is not None:
            given = [name for name, value in (("labels", self.labels), ("templates", self.templates),
                                               ("descriptions", self.descriptions),
                                               ("a label tree", self.labels_tree)) if value is not None]
            if given:
                raise InputError(f"a classifier file already holds its classes and prompts: leave out {given[0]} "
                                 "(CLI: --labels, --labels-file, --templates, --descriptions, --labels-tree)")
        elif self.labels_tree is not None and self.labels is not None:
            raise InputError("a label tree holds the classes: leave out the labels (CLI: --labels, --labels-file)")
        elif self.labels is None and self.labels_tree is None:
            raise InputError('no labels: name the classes (CLI: --labels "dog,cat", --labels-file FILE, '
                             '--labels-tree FILE; Python: labels=["dog", "cat"]) or give a classifier file')
        if self.labels is not None:
            resolve_classes(self.labels)
        if self.templates is not None:
            resolve_templates(self.templates)
        self._read_files()
        tree = self.is_tree()
        if not tree and (self.tree_mode is not None or self.beam is not None):
            raise InputError("--tree-mode and --beam apply to a label tree: give --labels-tree (or a tree "
                             "classifier file), or leave them out")
        if tree and self.top_k is not None:
            raise InputError("--top-k applies to flat labels: a label tree answers one label per level")
        if self.tree_mode is not None and self.tree_mode not in MODES:
            raise InputError(f"unknown tree mode {self.tree_mode!r}: use {', '.join(MODES)}")
        if self.beam is not None and self.tree_mode not in (None, "top-down"):
            raise InputError(f"--beam applies to --tree-mode top-down, not {self.tree_mode}")
        if self.reject is not None and self.reject_calibrate is not None:
            raise InputError("give --reject THRESHOLD or --reject-calibrate IMAGES, not both")
        rejecting = self.reject is not None or self.reject_calibrate is not None
        if not rejecting and (self.reject_score is not None or self.reject_label is not None):
            raise InputError("--reject-score and --reject-label apply to open-set rejection: add --reject "
                             "THRESHOLD or --reject-calibrate IMAGES")
        if self.tpr is not None and self.reject_calibrate is None:
            raise InputError("--tpr applies to --reject-calibrate (the share of known images the threshold keeps)")
        if self.tpr is not None and not 0 < self.tpr < 1:
            raise InputError(f"--tpr {self.tpr}: give a true-positive rate between 0 and 1, e.g. 0.95")
        if self.reject is not None and not math.isfinite(self.reject):
            raise InputError(f"--reject {self.reject}: give a finite threshold, e.g. 0.5")
        if self.reject_score is not None and self.reject_score not in SCORES:
            raise InputError(f"unknown open-set score {self.reject_score!r}: use {' or '.join(SCORES)}")
        self._check_calibrated(tree, rejecting)

    def _check_calibrated(self, tree: bool, rejecting: bool) -> None:
        """--accept-precision needs a calibrated flat classifier file; --transductive a flat head; a calibrated
        file's temperature is not overridden by --scale."""
        from ..calibration import METHODS

        flat = not tree and not self.is_multi_label() and not rejecting
        if self.transductive is not None:
            if self.transductive not in METHODS:
                raise InputError(f"unknown --transductive method {self.transductive!r}: use {', '.join(METHODS)}")
            if not flat:
                raise InputError("--transductive corrects flat labels over a collection: leave out --labels-tree, "
                                 "--multi-label and --reject / --reject-calibrate")
            if self.accept_precision is not None:
                raise InputError("--accept-precision's threshold was chosen on uncorrected scores: leave out "
                                 "--transductive or --accept-precision")
        calibration = self.calibration() if self.accept_precision is not None or self.scale is not None else None
        if self.accept_precision is not None:
            if not 0 < self.accept_precision < 1:
                raise InputError(f"--accept-precision {self.accept_precision}: give a precision between 0 and 1, "
                                 "e.g. 0.95")
            if not flat:
                raise InputError("--accept-precision applies to flat labels of a calibrated classifier file: leave "
                                 "out --labels-tree, --multi-label and --reject / --reject-calibrate")
            if not calibration or not calibration.get("accept"):
                raise InputError("--accept-precision needs a calibrated classifier file: run `zsclip calibrate "
                                 "--data LABELLED -c FILE -o FILE` and classify with -c FILE")
        if calibration and self.scale is not None:
            raise InputError("the classifier file is calibrated (its fitted temperature sets the probabilities): "
                             "leave out --scale")

    def calibration(self) -> dict | None:
        """The calibration a flat classifier file holds (``zsclip calibrate``), or None."""
        if self.classifier is None or self.is_tree() or self._is_multilabel_file():
            return None
        return getattr(self._loaded(), "calibration", None)

    def accept_threshold(self):
        """The ``AcceptThreshold`` for --accept-precision from the file's accept table, or None."""
        if self.accept_precision is None:
            return None
        from ..calibration import AcceptTable

        return AcceptTable.from_data(self.calibration()["accept"]).threshold_for_precision(self.accept_precision)

    def _check_multi_label(self) -> None:
        multi = self.is_multi_label()
        given = [name for name, value in (("--multi-score", self.multi_score), ("--threshold", self.threshold),
                                          ("--calibrate", self.calibrate),
                                          ("--target-precision", self.target_precision)) if value is not None]
        if not multi:
            if given:
                raise InputError(f"{given[0]} applies to multi-label classification: add --multi-label")
            return
        if self.is_tree():
            raise InputError("--multi-label scores flat labels: a label tree answers one label per level; give "
                             "--labels (or --labels-file) instead of --labels-tree")
        for name, value in (("--top-k", self.top_k), ("--reject", self.reject),
                            ("--reject-calibrate", self.reject_calibrate)):
            if value is not None:
                raise InputError(f"{name} does not apply to --multi-label: every label over its threshold is given "
                                 "(tune them with --threshold or --calibrate FILE)")
        from ..heads.multilabel import SCORES

        if self.multi_score is not None and self.multi_score not in SCORES:
            raise InputError(f"unknown multi-label score {self.multi_score!r}: use {', '.join(SCORES)}")
        if self.multi_score is not None and self._is_multilabel_file():
            raise InputError("a multi-label classifier file holds its score: leave out --multi-score")
        if self.threshold is not None and self.calibrate is not None:
            raise InputError("give --threshold T (one for every label) or --calibrate FILE (one per label), not both")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InputError(f"--threshold {self.threshold}: give a finite threshold, e.g. 0.5")
        if self.target_precision is not None and self.calibrate is None:
            raise InputError("--target-precision applies to --calibrate FILE (labelled images to choose thresholds on)")
        if self.target_precision is not None and not 0 < self.target_precision <= 1:
            raise InputError(f"--target-precision {self.target_precision}: give a precision between 0 and 1, e.g. 0.9")
        if self.multi_score == "standardised" and self.calibrate is None:
            raise InputError("--multi-score standardised needs per-label statistics: add --calibrate FILE (images "
                             "with their labels)")

    def is_multi_label(self) -> bool:
        """Whether the head gives every label over its threshold (asked for, or a multi-label file)."""
        return bool(self.multi_label) or self._is_multilabel_file()

    def _is_multilabel_file(self) -> bool:
        if is_loaded_instance(self.classifier, "zsclip.heads.multilabel", "MultiLabelClassifier"):
            return True
        if isinstance(self.classifier, (str, os.PathLike)):
            from ..heads.files import file_format

            return file_format(self.classifier) == formats.MULTILABEL
        return False

    def is_tree(self) -> bool:
        """Whether the head is a label tree (given as a tree, or as a tree classifier file)."""
        return self.labels_tree is not None or _is_tree_classifier(self.classifier) or (
            isinstance(self.classifier, (str, os.PathLike)) and _is_tree_file(self.classifier))

    @property
    def needs_text_tower(self) -> bool:
        """Whether building this head encodes prompts (labels or a tree; a classifier file does not,
        unless it is made multi-label with the negative score, which encodes negative prompts)."""
        negative = self.multi_score == "negative"
        return self.classifier is None or (bool(self.multi_label) and not self._is_multilabel_file() and negative)

    def classifier_model(self) -> tuple[str | None, str | None]:
        """(model, pretrained) a classifier file records, to load when the user names none."""
        if self.classifier is None:
            return None, None
        loaded = self._loaded()
        clf = loaded.node_classifier if _is_tree_classifier(loaded) else getattr(loaded, "positive", loaded)
        return clf.provenance.get("model"), clf.provenance.get("pretrained")

    def _loaded(self):
        if isinstance(self.classifier, (str, os.PathLike)):
            self.classifier = load_head_file(self.classifier)
        return self.classifier


def cached_classifier(options: HeadOptions, fingerprint: str | None, run: RunOptions, *, cache: bool = True,
                      cache_dir: str | os.PathLike | None = None, embed_dim: int | None = None
                      ) -> ZeroShotClassifier | None:
    """The flat classifier of ``options``' labels and templates as the cache holds it for the model with
    ``fingerprint`` (a store's, whose features are ``embed_dim`` wide), or None: then only the model's text
    tower can build it. Trees, descriptions and classifier files are not looked up here (they load as they
    always do)."""
    if not cache or fingerprint is None or options.labels is None or options.classifier is not None or \
            options.labels_tree is not None or options.descriptions is not None:
        return None
    return ZeroShotClassifier.cached(fingerprint, options.labels, options.templates, precision=run.precision,
                                     device=run.device, cache_dir=cache_dir, embed_dim=embed_dim)


def _is_tree_file(path) -> bool:
    from ..heads.files import file_format

    return file_format(path) == formats.TREE


def _is_tree_classifier(value: object) -> bool:
    return is_loaded_instance(value, "zsclip.hierarchy.modes", "TreeClassifier")


#: How a head gets its calibration images: (source, None) -> feature batches (a rejector's images), or
#: (manifest, label names) -> FeatureBatches with ``label_sets`` (multi-label thresholds).
Calibration = Callable[[object, object], Iterable]


def build_head(options: HeadOptions, encoder: Encoder | None, run: RunOptions, *, cache: bool = True,
               cache_dir: str | os.PathLike | None = None, calibration: Calibration | None = None,
               feature_dtype: str | None = None) -> Head:
    """The head ``options`` ask for. ``encoder`` may be None only for a classifier file (stored
    features need no model). ``calibration(source)`` yields feature batches of the calibration
    images; they are rounded to ``feature_dtype`` ("float16" / "float32": the features the head will
    judge, e.g. a float16 store) so the threshold is chosen on the same precision it is applied to."""
    options.check()
    build = {"precision": run.precision, "cache": cache, "cache_dir": cache_dir}
    if options.is_multi_label():
        return build_multilabel_head(options, encoder, build, calibration, feature_dtype)
    if options.classifier is not None:
        loaded = options._loaded()
        if encoder is not None:
            (loaded.node_classifier if _is_tree_classifier(loaded) else loaded).check_encoder(encoder)
            if isinstance(loaded, ZeroShotClassifier):
                loaded.encoder = encoder
        tree_classifier = loaded if _is_tree_classifier(loaded) else None
        flat = None if tree_classifier is not None else loaded
    elif options.labels_tree is not None:
        from ..hierarchy import TreeClassifier

        tree_classifier = TreeClassifier.build(_need(encoder), options.labels_tree, options.templates,
                                               descriptions=options.descriptions, **build)
        flat = None
    else:
        from ..hierarchy.descriptions import build_classifier

        tree_classifier = None
        flat = build_classifier(_need(encoder), options.labels, options.templates, options.descriptions, **build)
    from .registry import HEADS  # the registered kinds: a new head is one module and one line there

    if tree_classifier is not None:
        head: Head = HEADS["tree"](tree_classifier, options.tree_mode or "flat", options.beam or 1, options.scale)
    else:
        head = HEADS["flat"](flat, options.top_k or DEFAULT_TOP_K, options.scale, accept=options.accept_threshold())
    rejector = make_rejector(options, head, calibration, feature_dtype)
    return head if rejector is None else HEADS["reject"](head, rejector)


def build_multilabel_head(options: HeadOptions, encoder: Encoder | None, build: dict,
                          calibration: Calibration | None, feature_dtype: str | None) -> Head:
    """A ``MultiLabelHead``: from a multi-label file, a flat classifier file or labels; thresholds
    fixed (``threshold``, else the score's default) or calibrated on ``calibrate``."""
    from ..heads.multilabel import MultiLabelClassifier
    from .registry import HEADS

    if options.classifier is not None:
        loaded = options._loaded()
        if encoder is not None:
            loaded.check_encoder(encoder)
        if isinstance(loaded, MultiLabelClassifier):
            multilabel = loaded
            if options.threshold is not None:
                import torch

                multilabel.thresholds = torch.full_like(multilabel.thresholds, float(options.threshold))
                multilabel.calibration = {"thresholds": "fixed", "threshold": float(options.threshold)}
        else:
            multilabel = MultiLabelClassifier.from_classifier(loaded, encoder, score=_multi_score(options, loaded),
                                                              threshold=options.threshold, **build)
    else:
        from ..hierarchy.descriptions import build_classifier

        positive = build_classifier(_need(encoder), options.labels, options.templates, options.descriptions, **build)
        multilabel = MultiLabelClassifier.from_classifier(positive, encoder, score=_multi_score(options, positive),
                                                          threshold=options.threshold, **build)
    if options.threshold is not None:
        warn_threshold_out_of_range(float(options.threshold), multilabel.score, len(multilabel.classnames))
    if options.calibrate is not None:
        if calibration is None:
            raise InputError("--calibrate needs calibration images and a model to encode them")

        def batches():
            for batch in calibration(options.calibrate, multilabel.classnames):
                yield rounded(batch.features, feature_dtype), batch.good_label_sets()

        multilabel.calibrate(batches(), target_precision=options.target_precision)
    return HEADS["multilabel"](multilabel, options.scale)


def _multi_score(options: HeadOptions, positive: ZeroShotClassifier) -> str | None:
    """The score asked for; by default a sigmoid model's own, the standardised cosine when calibration
    images are given (measured best on the demo world), else ``default_score``: each label's cosine
    standardised over the images being classified (needs no labels)."""
    if options.multi_score is not None or positive.is_sigmoid:
        return options.multi_score
    return "standardised" if options.calibrate is not None else None


def make_rejector(options: HeadOptions, head: Head, calibration: Calibration | None,
                  feature_dtype: str | None) -> Rejector | None:
    """The rejector the options ask for (fixed or calibrated), or None."""
    if options.reject is None and options.reject_calibrate is None:
        return None
    from ..hierarchy import Rejector

    score = options.reject_score or "mcm"
    label = options.reject_label or DEFAULT_REJECT_LABEL
    if options.reject is not None:
        warn_out_of_range(options.reject, score, len(head.classnames))
        return Rejector(float(options.reject), score, label)
    if options.reject_calibrate is None:
        return None
    if calibration is None:
        raise InputError("--reject-calibrate needs calibration images and a model to encode them")
    tpr = options.tpr or DEFAULT_TPR

    def batches():
        for features in calibration(options.reject_calibrate, None):
            yield rounded(features, feature_dtype)

    rejector = Rejector.calibrate(head.classifier, batches(), tpr=tpr, score=score, label=label)
    if not rejector.calibration.get("num_images"):
        raise InputError("no calibration image could be read: give a folder of images of the named classes")
    return rejector


def warn_out_of_range(threshold: float, score: str, classes: int) -> None:
    """A fixed threshold outside the score's range rejects nothing or everything: say so."""
    low, high = (1.0 / max(classes, 1), 1.0) if score == "mcm" else (0.0, 1.0)
    if not low < threshold <= high:
        effect = "nothing" if threshold <= low else "every image"
        warnings.warn(f"--reject {threshold:g} rejects {effect}: the {score} score of {classes} classes lies in "
                      f"[{low:.4g}, {high:g}]; calibrate it on images of the named classes with --reject-calibrate "
                      "IMAGES --tpr 0.95", ZsclipWarning, stacklevel=3)


def warn_threshold_out_of_range(threshold: float, score: str, labels: int) -> None:
    """A fixed multi-label threshold outside the score's range gives every label or none: say so. The
    probabilities (negative, sigmoid, softmax) lie in [0, 1]; a z-score (standardised, collection) has no bounds."""
    if score in ("standardised", "collection") or 0.0 < threshold <= 1.0:
        return
    effect = "every label to every image" if threshold <= 0 else "no label to any image"
    warnings.warn(f"--threshold {threshold:g} gives {effect}: the {score} score of each of the {labels} labels lies "
                  "in [0, 1]; give a threshold inside it (e.g. 0.5), or calibrate one per label with --calibrate "
                  "FILE", ZsclipWarning, stacklevel=3)


def read_head_files(labels_tree, descriptions) -> tuple[object, object]:
    """(the label tree, the descriptions) with a file path in either read (a LabelTree, a mapping class
    -> sentences); anything else as given."""
    if isinstance(labels_tree, (str, os.PathLike)):
        from ..hierarchy.tree import read_tree

        labels_tree = read_tree(labels_tree)
    if isinstance(descriptions, (str, os.PathLike)):
        from ..hierarchy.descriptions import read_descriptions

        descriptions = read_descriptions(descriptions)
    return labels_tree, descriptions


def rounded(features, dtype: str | None):
    """``features`` rounded to ``dtype`` ("float16": a half-precision store's) and back to float32."""
    if dtype is None:
        return features
    import torch

    return features.to(getattr(torch, dtype)).float()


def _need(encoder: Encoder | None) -> Encoder:
    if encoder is None:
        raise InputError("building a classifier from labels needs the model's text tower")
    return encoder


__all__ = ["HeadOptions", "build_head", "cached_classifier", "make_rejector", "build_multilabel_head",
           "read_head_files", "warn_out_of_range", "warn_threshold_out_of_range", "DEFAULT_TOP_K", "DEFAULT_TPR"]
