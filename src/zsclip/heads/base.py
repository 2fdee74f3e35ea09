"""What every head shares: the answer row (``Prediction``) and the ``Head`` interface."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..classifier import ZeroShotClassifier
    from ..encoders.base import Encoder

#: The error an image gets when its features or scores are not finite numbers (a damaged store row).
NOT_FINITE = "its embedding or scores are not finite numbers (NaN or infinite): re-embed the image"


@dataclass
class Prediction:
    """One input's answer: labels and scores, best first, or the reason it failed.

    Heads whose answer has named fields (a label tree's ``levelN`` / ``levelN_probability``, an
    open-set score) also fill ``record``; ``labels`` / ``scores`` then hold the most specific label."""

    source: str
    labels: list[str]
    scores: list[float]
    error: str | None = None
    record: dict | None = None
    #: a video clip's span in seconds (None for photos and stored images)
    start: float | None = None
    end: float | None = None
    #: accept-or-review (``--accept-precision``): whether the top-1 confidence reaches the accept threshold;
    #: None when no threshold was asked for
    accepted: bool | None = None


class Head(ABC):
    """Features [B, D] (L2-normalised) -> one ``Prediction`` per row (``source`` left empty: the
    task names it). Rows whose features or scores are not finite become error rows, so a NaN
    never reaches an output."""

    #: The registry name of the kind of head ("flat", "tree", ...).
    kind: ClassVar[str]
    #: Whether ``_answer`` computes on numpy features as they come (a store's rows): then a job over
    #: stored features never imports torch. Other heads get a tensor wrapping the same memory.
    takes_arrays: ClassVar[bool] = False

    @property
    @abstractmethod
    def classifier(self) -> ZeroShotClassifier:
        """The flat classifier a model is checked against and open-set scores are computed with."""

    @property
    def columns(self) -> list[str] | None:
        """Named fields of ``Prediction.record`` (written as columns), or None for top-k rows."""
        return None

    @property
    def classnames(self) -> list[str]:
        return list(self.classifier.classnames)

    def check_encoder(self, encoder: Encoder) -> None:
        self.classifier.check_encoder(encoder)

    def answer(self, features: torch.Tensor | np.ndarray) -> list[Prediction]:
        """One answer per row of ``features`` (a tensor, or a numpy array from a store); non-finite rows
        get an error instead."""
        if not len(features):
            return []
        if isinstance(features, np.ndarray):
            finite = np.isfinite(features).all(axis=1)
            if not self.takes_arrays:
                import torch

                features, finite = torch.from_numpy(features), torch.from_numpy(finite)
        else:
            finite = features.isfinite().all(dim=1)
        if bool(finite.all()):
            answers = self._answer(features)
        else:
            good = iter(self._answer(features[finite]) if bool(finite.any()) else [])
            answers = [next(good) if ok else Prediction("", [], [], NOT_FINITE) for ok in finite.tolist()]
        for answer in answers:
            if answer.error is None and not all(map(math.isfinite, answer.scores)):
                answer.labels, answer.scores, answer.record, answer.error = [], [], None, NOT_FINITE
                answer.accepted = None
        return answers

    @abstractmethod
    def _answer(self, features: torch.Tensor) -> list[Prediction]:
        """Answers for finite features."""

    @abstractmethod
    def rejected(self, answer: Prediction, label: str, score: float) -> Prediction:
        """The answer for an image an open-set rejector refused (``label`` scored with ``score``)."""

    @property
    def needs_collection(self) -> bool:
        """Whether answers need statistics over all the images being answered (see ``for_collection``):
        the task then gathers every batch's features first (on the driver, so Ray answers as locally)."""
        return False

    def for_collection(self, features: torch.Tensor) -> Head:
        """The head that answers the images whose features are ``features`` (all of them, finite rows)."""
        return self

    def describe(self) -> dict:
        """What this head is, for result records and the service."""
        return {"head": self.kind, "num_classes": len(self.classnames)}


__all__ = ["Head", "Prediction", "NOT_FINITE"]
