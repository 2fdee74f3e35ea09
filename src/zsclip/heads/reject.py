"""Open-set rejection around any head: an image whose open-set score is below the threshold gets
the reject label instead of the head's answer."""

from __future__ import annotations

import torch

from ..classifier import ZeroShotClassifier
from ..hierarchy import Rejector
from .base import Head, Prediction


class RejectingHead(Head):
    """``inner``'s answers, with rejected images answered by ``inner.rejected``. The score is the
    rejector's (MCM or max-prob) over ``inner.classifier`` (a tree's leaves); record heads get an
    ``openset_score`` field for every image."""

    kind = "reject"

    def __init__(self, inner: Head, rejector: Rejector) -> None:
        self.inner, self.rejector = inner, rejector

    @property
    def classifier(self) -> ZeroShotClassifier:
        return self.inner.classifier

    @property
    def columns(self) -> list[str] | None:
        return None if self.inner.columns is None else [*self.inner.columns, "openset_score"]

    def check_encoder(self, encoder) -> None:
        self.inner.check_encoder(encoder)

    def _answer(self, features: torch.Tensor) -> list[Prediction]:
        answers = self.inner.answer(features)
        scores = self.rejector.scores(self.inner.classifier, features).tolist()
        out = []
        for answer, score in zip(answers, scores, strict=True):
            if answer.error is None and score < self.rejector.threshold:
                answer = self.inner.rejected(answer, self.rejector.label, score)
            if answer.record is not None:
                answer.record["openset_score"] = float(score)
            out.append(answer)
        return out

    def rejected(self, answer: Prediction, label: str, score: float) -> Prediction:
        return self.inner.rejected(answer, label, score)

    def describe(self) -> dict:
        return {**self.inner.describe(), "reject": {"score": self.rejector.score, "threshold": self.rejector.threshold,
                                                    "label": self.rejector.label, **self.rejector.calibration}}


__all__ = ["RejectingHead"]
