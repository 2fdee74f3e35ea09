"""What a labelling tool needs from a job's answers, whatever the head: the label space (classes, a label
tree, the reject label, the model's version) and, per answer, the labels chosen, one confidence, the margin
to the runner-up and whether the image was rejected.

Every labelling sink (Label Studio, FiftyOne, imagefolder, class folders) reads answers through
``LabelSpace.read``, so a new head shape is handled here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..heads.base import Prediction


@dataclass
class Labelled:
    """One answer as a labelling tool sees it."""

    labels: list[str]                # the chosen labels (one; several for multi-label; none is possible)
    score: float                     # the confidence of the choice (the open-set score when rejected)
    margin: float | None = None      # top score minus the runner-up's (flat heads with top_k >= 2)
    runner_up: str | None = None
    rejected: bool = False           # "none of these": the reject head refused the image
    taxonomy: list[list[str]] = field(default_factory=list)  # label trees: each label's path from the top
    scores: list[float] = field(default_factory=list)        # per label of ``labels``


@dataclass
class LabelSpace:
    """The labels a job can give: ``kind`` single / multi / tree, the class names (every node's name for a
    tree), the tree, the reject label (None without rejection) and ``model_version`` (model @ fingerprint)."""

    classnames: list[str]
    kind: str = "single"
    tree: object = None
    reject_label: str | None = None
    model_version: str = "zsclip"
    timed: bool = False

    @classmethod
    def of(cls, head, timed: bool = False) -> LabelSpace:
        """The label space of a job's head (any kind, a rejector around it)."""
        inner = getattr(head, "inner", head)
        rejector = getattr(head, "rejector", None)
        tree = getattr(getattr(inner, "tree_classifier", None), "tree", None)
        kind = "tree" if tree is not None else "multi" if inner.kind == "multilabel" else "single"
        names = [node.name for node in tree] if tree is not None else list(inner.classnames)
        return cls(names, kind, tree, None if rejector is None else rejector.label, model_version(head.classifier),
                   timed)

    @property
    def choices(self) -> list[str]:
        """Every value a prediction can hold: the classes, then the reject label."""
        extra = [self.reject_label] if self.reject_label is not None and self.reject_label not in self.classnames \
            else []
        return [*self.classnames, *extra]

    def read(self, prediction: Prediction) -> Labelled:
        """``prediction`` (an answer without an error) as labels, confidence, margin, rejection."""
        labels, scores = list(prediction.labels), list(prediction.scores)
        if self.reject_label is not None and labels == [self.reject_label]:
            return Labelled([self.reject_label], float(scores[0]) if scores else 0.0, rejected=True,
                            taxonomy=[[self.reject_label]] if self.kind == "tree" else [], scores=scores[:1])
        if self.kind == "multi":
            return Labelled(labels, max(scores) if scores else 0.0, scores=scores)
        if not labels:
            return Labelled([], 0.0)
        margin = scores[0] - scores[1] if len(scores) > 1 else None
        taxonomy = [self.path(labels[0])] if self.kind == "tree" else []
        return Labelled(labels[:1], float(scores[0]), margin, labels[1] if len(labels) > 1 else None,
                        taxonomy=taxonomy, scores=scores[:1])

    def path(self, label: str) -> list[str]:
        """A tree label's names from the top level down to it."""
        return [node.name for node in self.tree.find(label).path()]


def model_version(classifier) -> str:
    """``model@fingerprint`` of the classifier's model (12 hex digits): which model gave a prediction.
    ``classifier``: a classifier, or its provenance (a dict with ``model`` and ``fingerprint``)."""
    provenance = classifier if isinstance(classifier, dict) else getattr(classifier, "provenance", None) or {}
    model = provenance.get("model") or "unknown model"
    fingerprint = str(provenance.get("fingerprint") or "").rsplit(":", 1)[-1]  # backend:recipe:digest
    return f"zsclip {model}@{fingerprint[:12]}" if fingerprint else f"zsclip {model}"


__all__ = ["LabelSpace", "Labelled", "model_version"]
