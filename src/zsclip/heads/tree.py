"""The tree head: a label and probability per level of a label tree, in one of its modes."""

from __future__ import annotations

import torch

from ..classifier import ZeroShotClassifier
from ..classifier.zeroshot import checked_scale
from ..errors import InputError
from ..hierarchy import MODES, TreeClassifier
from ..hierarchy.modes import MAX_BEAM
from .base import Head, Prediction


class TreeHead(Head):
    """``TreeClassifier.predict`` in ``mode`` (flat, top-down with ``beam``, chils): ``record`` holds
    ``levelN`` / ``levelN_probability``; ``labels`` / ``scores`` the deepest level's label."""

    kind = "tree"

    def __init__(self, tree_classifier: TreeClassifier, mode: str = "flat", beam: int = 1,
                 scale: float | None = None) -> None:
        if mode not in MODES:
            raise InputError(f"unknown tree mode {mode!r}: use {', '.join(MODES)}")
        if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM:
            raise InputError(f"beam width {beam!r} is out of range: use 1 to {MAX_BEAM}")
        self.tree_classifier, self.mode, self.beam = tree_classifier, mode, beam
        self.scale = None if scale is None else checked_scale(scale)
        self._leaves = tree_classifier.leaf_classifier

    @property
    def classifier(self) -> ZeroShotClassifier:
        return self._leaves

    @property
    def columns(self) -> list[str]:
        return [column for name in self.tree_classifier.tree.level_names()
                for column in (name, f"{name}_probability")]

    def check_encoder(self, encoder) -> None:
        self.tree_classifier.node_classifier.check_encoder(encoder)

    def _answer(self, features: torch.Tensor) -> list[Prediction]:
        prediction = self.tree_classifier.predict(features, self.mode, self.beam, self.scale)
        records = self.tree_classifier.rows(prediction)
        names = self.tree_classifier.tree.level_names()
        return [Prediction("", [record[names[-1]]], [record[f"{names[-1]}_probability"]], None, record)
                for record in records]

    def rejected(self, answer: Prediction, label: str, score: float) -> Prediction:
        record = {}
        for name in self.tree_classifier.tree.level_names():
            record[name], record[f"{name}_probability"] = label, None
        return Prediction(answer.source, [label], [score], None, record)

    def describe(self) -> dict:
        return {"head": self.kind, "num_classes": len(self.tree_classifier.tree.nodes), "mode": self.mode,
                "beam": self.beam, "levels": self.tree_classifier.tree.level_names()}


__all__ = ["TreeHead"]
