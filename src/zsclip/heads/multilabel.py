"""Multi-label: every label that applies to an image, each scored on its own, each with its own threshold.

A softmax makes labels compete: with "dog" and "cat" both in the picture, they share one unit of
probability, and the share depends on which other labels were named. A multi-label score must not
depend on the other labels; a threshold on raw cosine fails because each label's cosines sit at a
different level. ``MultiLabelClassifier`` offers these per-label scores (``SCORES``):

- ``sigmoid``: a sigmoid-trained model's own probability, sigmoid(scale * cos + bias) (SigLIP);
- ``negative``: the label prompt against a negative prompt for the same label ("a photo without a
  {}."), a two-way softmax per label: sigmoid(scale * (cos(f, label) - cos(f, not label))). It uses
  only what a softmax CLIP model was trained for (comparing captions for one image) and needs no data;
- ``standardised``: the label's cosine as a z-score of that label's cosines over calibration images
  (unlabelled images suffice), so one threshold means the same for every label;
- ``collection``: the label's cosine as a z-score of that label's cosines over the images being classified
  (the run's own images: no labels, no calibration set); a run of fewer than ``MIN_COLLECTION`` images
  has no statistics to speak of and is scored by ``COLLECTION_FALLBACK`` instead, with a warning. The
  default without ``--calibrate`` for softmax CLIP models (measured: benchmarks/multilabel_demo.py);
- ``softmax``: the usual softmax over the named labels: *not* independent, kept as the baseline.

Thresholds per label are fixed (``DEFAULT_THRESHOLDS``) or calibrated on a small multi-label set for
a target precision or the best F1, and saved with the weights in a ``zsclip-multilabel/1`` file.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..classifier import ZeroShotClassifier, formats
from ..classifier.zeroshot import checked_scale
from ..errors import ClassifierFileError, InputError, ZsclipWarning
from .base import Head, Prediction

FILE_FORMAT = formats.MULTILABEL
SCORES = ("collection", "negative", "standardised", "sigmoid", "softmax")
#: Per-label negative prompts (each class name is put in every one, ensembled as the label prompts are).
NEGATIVE_TEMPLATES = ("a photo without a {}.", "a photo with no {}.", "there is no {} in this photo.")
#: A fixed threshold per score kind: probabilities at 0.5, z-scores at 2 standard deviations; softmax
#: at 0.5 (only a dominant label passes: the baseline's weakness, measured in the README).
DEFAULT_THRESHOLDS = {"negative": 0.5, "sigmoid": 0.5, "standardised": 2.0, "softmax": 0.5, "collection": 1.75}
#: The fewest images whose per-label statistics the ``collection`` score uses; fewer are scored by the fallback.
MIN_COLLECTION = 16
COLLECTION_FALLBACK = "softmax"


def default_score(classifier: ZeroShotClassifier) -> str:
    """A sigmoid model's own sigmoid; for softmax CLIP models each label's cosine standardised over the images
    being classified (needs no labels; measured best of those that need none, far ahead of the negative prompt)."""
    return "sigmoid" if classifier.is_sigmoid else "collection"


@dataclass
class MultiLabelClassifier:
    """Label weights (``positive``), per-label negative weights (score ``negative``), per-label cosine
    statistics (``standardised``), and a threshold per label."""

    positive: ZeroShotClassifier
    score: str
    thresholds: torch.Tensor                     # [C]
    negative_weights: torch.Tensor | None = None  # [D, C]
    mean: torch.Tensor | None = None              # [C] cosine mean per label over calibration images
    std: torch.Tensor | None = None               # [C]
    calibration: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"unknown multi-label score {self.score!r}: use {', '.join(SCORES)}")
        if self.score == "sigmoid" and not self.positive.is_sigmoid:
            raise InputError("the sigmoid score needs a sigmoid-trained model (SigLIP): for this softmax model use "
                             "--multi-score negative or standardised")
        if self.score == "negative" and self.negative_weights is None:
            raise InputError("the negative score needs negative prompts: build with MultiLabelClassifier.build")

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, encoder, labels, templates=None, *, score: str | None = None, threshold: float | None = None,
              negative_templates: Sequence[str] = NEGATIVE_TEMPLATES, **build) -> MultiLabelClassifier:
        """Label prompts (``templates``) and, for the ``negative`` score, one negative prompt set per label."""
        positive = ZeroShotClassifier.build(encoder, labels, templates, **build)
        return cls.from_classifier(positive, encoder, score=score, threshold=threshold,
                                   negative_templates=negative_templates, **build)

    @classmethod
    def from_classifier(cls, positive: ZeroShotClassifier, encoder=None, *, score: str | None = None,
                        threshold: float | None = None, negative_templates: Sequence[str] = NEGATIVE_TEMPLATES,
                        **build) -> MultiLabelClassifier:
        score = score or default_score(positive)
        negative = None
        if score == "negative":
            if encoder is None:
                raise InputError("the negative score builds negative prompts: it needs the model's text tower")
            negative = ZeroShotClassifier.build(encoder, positive.synonyms, list(negative_templates), **build).weights
        value = DEFAULT_THRESHOLDS.get(score, 0.5) if threshold is None else _finite(threshold, "threshold")
        thresholds = torch.full((len(positive.classnames),), float(value))
        return cls(positive, score, thresholds, negative, calibration={"thresholds": "fixed", "threshold": value})

    # --- using ---------------------------------------------------------------------------------
    @property
    def classnames(self) -> list[str]:
        return list(self.positive.classnames)

    def scores(self, features: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Per-label scores [B, C] (see ``SCORES``)."""
        features = features.float()
        cosine = features @ self.positive.weights
        scale = self.positive.logit_scale if scale is None else checked_scale(scale)
        if self.score == "sigmoid":
            return torch.sigmoid(scale * cosine + self.positive.logit_bias)
        if self.score == "negative":
            return torch.sigmoid(scale * (cosine - features @ self.negative_weights))
        if self.score in ("standardised", "collection"):
            if self.mean is None or self.std is None:
                raise InputError("the standardised score needs per-label statistics: calibrate it on images "
                                 "(CLI: --calibrate FILE)" if self.score == "standardised" else
                                 "the collection score needs the statistics of the images being classified: "
                                 "answer through over_collection (the task does)")
            return (cosine - self.mean) / self.std
        return (scale * cosine).softmax(dim=-1)

    def over(self, features: torch.Tensor) -> MultiLabelClassifier:
        """Score ``collection``: a copy with each label's cosine statistics over ``features`` (every image being
        classified); for fewer than ``MIN_COLLECTION`` images, a copy scored by ``COLLECTION_FALLBACK`` at its
        default threshold, with a warning saying so."""
        from dataclasses import replace

        features = features.float()
        if len(features) < MIN_COLLECTION:
            given = self.calibration.get("threshold")
            unused = (f"; the threshold {given:g} given for the collection score does not apply to "
                      f"{COLLECTION_FALLBACK} probabilities (give --multi-score softmax to set one)"
                      if given is not None and given != DEFAULT_THRESHOLDS.get(self.score) else "")
            warnings.warn(f"{len(features)} images: the collection score standardises each label over at least "
                          f"{MIN_COLLECTION} images; these are scored by {COLLECTION_FALLBACK} (threshold "
                          f"{DEFAULT_THRESHOLDS[COLLECTION_FALLBACK]}) instead{unused}", ZsclipWarning, stacklevel=2)
            value = DEFAULT_THRESHOLDS[COLLECTION_FALLBACK]
            return replace(self, score=COLLECTION_FALLBACK, thresholds=torch.full_like(self.thresholds, value),
                           mean=None, std=None, calibration={**self.calibration, "fallback": COLLECTION_FALLBACK,
                                                             "threshold": value, "thresholds": "fixed"})
        cosine = features @ self.positive.weights
        return replace(self, mean=cosine.mean(dim=0), std=cosine.std(dim=0).clamp_min(1e-6),
                       calibration={**self.calibration, "num_images": len(features)})

    def calibrate(self, batches: Iterable[tuple[torch.Tensor, Sequence[Sequence[int]]]], *,
                  target_precision: float | None = None, thresholds: bool = True) -> MultiLabelClassifier:
        """Per-label statistics (``standardised``) and thresholds from labelled feature batches:
        (features [n, D], label indices of each row). A threshold is the lowest score at which the
        label's precision on these images reaches ``target_precision`` (the most recall at that
        precision), or, without a target, the score of the best F1. A label with no positive image
        keeps its threshold (said in ``calibration``); one whose precision never reaches the target
        gets a threshold above all its scores (it is never given)."""
        if target_precision is not None and not 0 < target_precision <= 1:
            raise InputError(f"target precision {target_precision}: give a precision between 0 and 1, e.g. 0.9")
        features, truth = [], []
        for batch, label_sets in batches:
            features.append(batch.float())
            rows = torch.zeros(len(label_sets), len(self.classnames), dtype=torch.bool)
            for row, labels in enumerate(label_sets):
                rows[row, list(labels)] = True
            truth.append(rows)
        if not features or not sum(len(f) for f in features):
            raise InputError("no calibration image could be read: give a manifest of images with their labels")
        all_features, all_truth = torch.cat(features), torch.cat(truth)
        if self.score == "collection" and len(all_features) < MIN_COLLECTION:
            raise InputError(f"{len(all_features)} calibration images: the collection score's thresholds are chosen "
                             f"on at least {MIN_COLLECTION} (its statistics are those of the images scored)")
        judged = self.over(all_features) if self.score == "collection" else self  # thresholds for runs like these
        if self.score == "standardised":
            cosine = all_features @ self.positive.weights
            self.mean = cosine.mean(dim=0)
            self.std = cosine.std(dim=0).clamp_min(1e-6) if len(cosine) > 1 else torch.ones(len(self.classnames))
        info: dict = {"num_images": len(all_features), "thresholds": "fixed"}
        if thresholds:
            scores = judged.scores(all_features)
            chosen, unreached, unseen = [], [], []
            for label in range(len(self.classnames)):
                value, status = choose_threshold(scores[:, label], all_truth[:, label], target_precision)
                chosen.append(float(self.thresholds[label]) if value is None else value)
                if status == "no positives":
                    unseen.append(self.classnames[label])
                elif status == "unreached":
                    unreached.append(self.classnames[label])
            self.thresholds = torch.tensor(chosen)
            info.update({"thresholds": "target precision" if target_precision is not None else "best F1",
                         "target_precision": target_precision, "labels_without_positives": unseen,
                         "labels_below_target": unreached})
            if unseen:
                warnings.warn(f"{len(unseen)} labels have no positive calibration image and keep the fixed threshold "
                              f"(first: {unseen[0]!r})", ZsclipWarning, stacklevel=2)
            if unreached:
                warnings.warn(f"{len(unreached)} labels never reach precision {target_precision} on the calibration "
                              f"images and will not be given (first: {unreached[0]!r})", ZsclipWarning, stacklevel=2)
        self.calibration = info
        return self

    def check_encoder(self, encoder) -> None:
        self.positive.check_encoder(encoder)

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """safetensors (weights, negative weights, thresholds, statistics) + JSON metadata, atomically."""
        from ..outputs.atomic import atomic_path

        path = Path(path)
        clf = self.positive
        tensors = {"weights": clf.weights.contiguous(), "thresholds": self.thresholds.float().contiguous()}
        for name in ("negative_weights", "mean", "std"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name).float().contiguous()
        metadata = {"format": FILE_FORMAT, "classnames": clf.classnames, "synonyms": clf.synonyms,
                    "logit_scale": clf.logit_scale, "logit_bias": clf.logit_bias, "provenance": clf.provenance,
                    "score": self.score, "calibration": self.calibration}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata={"zsclip": json.dumps(metadata, ensure_ascii=False)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> MultiLabelClassifier:
        """Read a ``zsclip-multilabel/1`` file; every field is checked (a tampered file is refused in one line)."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = json.loads((handle.metadata() or {})["zsclip"])
            tensors = load_file(str(path))
        except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError, RecursionError) as error:
            reason = " ".join(str(error).split())[:160]
            raise ClassifierFileError(f"{path} is not a zsclip classifier file ({reason}): rebuild it") from None
        problem = _file_problem(metadata, tensors)
        if problem:
            raise ClassifierFileError(f"{path} is damaged or not a multi-label classifier file ({problem}): rebuild it")
        positive = ZeroShotClassifier(tensors["weights"].float(), list(metadata["classnames"]),
                                      [list(s) for s in metadata["synonyms"]], float(metadata["logit_scale"]),
                                      metadata["logit_bias"], dict(metadata["provenance"]))
        try:
            return cls(positive, metadata["score"], tensors["thresholds"].float(), tensors.get("negative_weights"),
                       tensors.get("mean"), tensors.get("std"), dict(metadata.get("calibration") or {}))
        except InputError as error:
            raise ClassifierFileError(f"{path}: {error}") from None

    def __repr__(self) -> str:
        return (f"MultiLabelClassifier({len(self.classnames)} labels, score={self.score!r}, "
                f"thresholds={self.calibration.get('thresholds', 'fixed')})")


def choose_threshold(scores: torch.Tensor, truth: torch.Tensor, target_precision: float | None
                     ) -> tuple[float | None, str]:
    """(threshold, status) for one label: predicted = score >= threshold. Candidates are the label's
    distinct scores; ``target_precision``: the lowest candidate whose precision reaches it; else the
    candidate of the best F1 (the highest on ties). Status: "ok", "no positives", "unreached"."""
    positives = int(truth.sum())
    if positives == 0:
        return None, "no positives"
    order = torch.argsort(scores, descending=True, stable=True)
    ranked, hits = scores[order], truth[order].double()
    true_pos = torch.cumsum(hits, 0)
    predicted = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    last_of_value = torch.ones(len(ranked), dtype=torch.bool)
    last_of_value[:-1] = ranked[1:] != ranked[:-1]   # cut only between distinct scores
    precision = (true_pos / predicted)[last_of_value]
    recall = (true_pos / positives)[last_of_value]
    values = ranked[last_of_value]
    if target_precision is not None:
        reached = torch.nonzero(precision >= target_precision - 1e-12).flatten()
        if not len(reached):
            return float(torch.nextafter(ranked[0], torch.tensor(math.inf))), "unreached"
        return float(values[reached[-1]]), "ok"
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    best = torch.nonzero(f1 == f1.max()).flatten()[0]
    return float(values[best]), "ok"


def _finite(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{what} {value!r}: give a finite number, e.g. 0.5")
    return number


def _file_problem(metadata: object, tensors: dict) -> str | None:
    from ..classifier.zeroshot import _FILE_FORMAT, _metadata_problem

    if not isinstance(metadata, dict) or metadata.get("format") != FILE_FORMAT:
        return f"format is not {FILE_FORMAT!r}"
    weights = tensors.get("weights")
    if weights is None:
        return "no weights"
    # the common fields of a flat file; this file's "calibration" is its thresholds' (checked below), not a
    # temperature fitted by `zsclip calibrate`
    common = {key: value for key, value in metadata.items() if key != "calibration"}
    problem = _metadata_problem({**common, "format": _FILE_FORMAT}, weights)
    if problem:
        return problem
    if metadata.get("score") not in SCORES:
        return f"score {str(metadata.get('score'))[:20]!r} is not one of {', '.join(SCORES)}"
    classes = len(metadata["classnames"])
    for name, shape in (("thresholds", (classes,)), ("negative_weights", tuple(weights.shape)),
                        ("mean", (classes,)), ("std", (classes,))):
        tensor = tensors.get(name)
        if tensor is None:
            if name == "thresholds":
                return "no thresholds"
            continue
        if tuple(tensor.shape) != shape or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            return f"{name} {tuple(tensor.shape)} are not {shape} finite numbers"
    if (tensors.get("mean") is None) != (tensors.get("std") is None):
        return "mean and std come together"
    # a score whose inputs the file lacks is refused here, at load, before any output is opened (it used to
    # fail at the first batch, leaving a .partial)
    if metadata["score"] == "standardised" and tensors.get("mean") is None:
        return ("score 'standardised' needs per-label statistics (mean, std) and the file holds none: build it "
                "with --calibrate")
    if metadata["score"] == "negative" and tensors.get("negative_weights") is None:
        return "score 'negative' needs the negative prompts' weights and the file holds none"
    if "std" in tensors and not bool((tensors["std"] > 0).all()):
        return "std is not positive"
    if not isinstance(metadata.get("calibration", {}), dict):
        return "calibration is not a table"
    return None


class MultiLabelHead(Head):
    """Every label whose score reaches its threshold, best first (``labels`` / ``scores``; none is a
    valid answer); ``record`` holds them as the ``labels`` and ``scores`` columns."""

    kind = "multilabel"

    def __init__(self, classifier: MultiLabelClassifier, scale: float | None = None) -> None:
        self.multilabel = classifier
        self.scale = None if scale is None else checked_scale(scale)

    @property
    def classifier(self) -> ZeroShotClassifier:
        return self.multilabel.positive

    @property
    def columns(self) -> list[str]:
        return ["labels", "scores"]

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return self.multilabel.scores(features, self.scale)

    @property
    def needs_collection(self) -> bool:
        return self.multilabel.score == "collection"

    def for_collection(self, features: torch.Tensor) -> MultiLabelHead:
        if not self.needs_collection:
            return self
        return MultiLabelHead(self.multilabel.over(features), self.scale)

    def _answer(self, features: torch.Tensor) -> list[Prediction]:
        scores = self.scores(features)
        over = scores >= self.multilabel.thresholds
        names = self.multilabel.classnames
        answers = []
        for row, passed in zip(scores.tolist(), over.tolist(), strict=True):
            picked = sorted((i for i, ok in enumerate(passed) if ok), key=lambda i: -row[i])
            labels, values = [names[i] for i in picked], [row[i] for i in picked]
            answers.append(Prediction("", labels, values, None, {"labels": labels, "scores": values}))
        return answers

    def rejected(self, answer: Prediction, label: str, score: float) -> Prediction:
        return Prediction(answer.source, [label], [score], None, {"labels": [label], "scores": [score]})

    def describe(self) -> dict:
        return {"head": self.kind, "num_classes": len(self.multilabel.classnames), "score": self.multilabel.score,
                "thresholds": self.multilabel.calibration.get("thresholds", "fixed")}


__all__ = ["MultiLabelClassifier", "MultiLabelHead", "SCORES", "MIN_COLLECTION", "COLLECTION_FALLBACK",
           "NEGATIVE_TEMPLATES", "DEFAULT_THRESHOLDS",
           "FILE_FORMAT", "choose_threshold", "default_score"]
