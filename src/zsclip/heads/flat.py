"""The flat head: top-k labels of any flat classifier (built, linear probe, Tip-Adapter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..classifier.zeroshot import checked_scale
from ..errors import InputError
from .base import Head, Prediction

if TYPE_CHECKING:
    import torch

    from ..calibration import AcceptThreshold
    from ..classifier import ZeroShotClassifier


class FlatHead(Head):
    """``classifier.top_k`` per image: probabilities by softmax (sigmoid for sigmoid models)."""

    kind = "flat"
    takes_arrays = True  # ZeroShotClassifier.top_k computes numpy features with numpy

    def __init__(self, classifier: ZeroShotClassifier, top_k: int = 5, scale: float | None = None, *,
                 accept: AcceptThreshold | None = None) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k {top_k!r}: ask for at least one label per image")
        self._classifier = classifier
        self.top_k = top_k
        self.scale = None if scale is None else checked_scale(scale)
        #: accept-or-review: each answer's ``accepted`` says whether its top-1 confidence reaches the threshold
        self.accept = accept

    @property
    def classifier(self) -> ZeroShotClassifier:
        return self._classifier

    def _answer(self, features: torch.Tensor | np.ndarray) -> list[Prediction]:
        scores, indices = self._classifier.top_k(features, self.top_k, self.scale)
        names = self._classifier.classnames
        answers = [Prediction("", [names[i] for i in picked], values)
                   for picked, values in zip(indices.tolist(), scores.tolist(), strict=True)]
        if self.accept is not None:
            for answer in answers:
                answer.accepted = self.accept.accepts(answer.scores[0])
        return answers

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] (what eval's metrics rank)."""
        return self._classifier.logits(features, self.scale)

    def rejected(self, answer: Prediction, label: str, score: float) -> Prediction:
        return Prediction(answer.source, [label], [score])

    def describe(self) -> dict:
        described = {**super().describe(), "top_k": self.top_k,
                     "scoring": "sigmoid" if self._classifier.is_sigmoid else "softmax"}
        if self._classifier.calibration:
            described["temperature"] = self._classifier.temperature
        if self.accept is not None:
            described["accept"] = self.accept.to_data()
        return described


__all__ = ["FlatHead"]
