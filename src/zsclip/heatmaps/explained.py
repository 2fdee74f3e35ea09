"""One chunk of images answered by a head and explained with heatmaps: the image-level core of the explain task.

Below the tasks and the Ray runner, so that both run it: ``zsclip.tasks.explain`` in this process (and the
service on its uploads), ``zsclip.cluster.explain`` in actors that hold the model and the head. What is explained
comes from the answer, through the head's own weights (``chosen_labels``), or from fixed targets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ZsclipError
from ..heads.base import Prediction

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from ..encoders.base import Encoder
    from ..heads import Head
    from ..options import RunOptions


@dataclass
class Explanation:
    """One image: its answer, the labels explained (with their scores), one [H, W] map per label (the image's
    own size), and the files written for them (``png``, ``npy`` per label, when written)."""

    source: str
    prediction: Prediction
    labels: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    heatmaps: list[np.ndarray] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    image: Image.Image | None = field(default=None, repr=False)

    @property
    def error(self) -> str | None:
        return self.prediction.error


def decode_chunk(items: Sequence, run: RunOptions) -> list[tuple[str, Image.Image | None, str | None]]:
    """``(name, image or None, error or None)`` for each source of ``items`` (its own error kept), decoded at
    full size (a heatmap is drawn on the image as it is), under ``run``'s pixel and URL time limits."""
    from ..data.images import load_image

    decoded: list[tuple[str, Image.Image | None, str | None]] = []
    for item in items:
        if item.error is not None:
            decoded.append((item.name, None, item.error))
            continue
        try:
            decoded.append((item.name, load_image(item.name, None, run.max_pixels, timeout=run.url_timeout,
                                                  draft=False), None))
        except ZsclipError as error:
            decoded.append((item.name, None, str(error)))
    return decoded


def explain_decoded(head: Head, encoder: Encoder, decoded: Sequence[tuple[str, Image.Image | None, str | None]], *,
                    top_k: int = 1, fixed=None, method: str | None = None, upscale: int | None = None,
                    precision: str = "fp32") -> list[Explanation]:
    """Explanations of already decoded images, ``(name, image or None, error or None)`` each: answered by
    ``head`` and explained (its ``top_k`` / path / labels over threshold, or the ``fixed`` targets of
    ``text_targets``) in one heatmap batch. The service calls this with its uploads."""
    import torch

    from ..heatmaps import image_heatmaps

    good = [(name, image) for name, image, error in decoded if error is None]
    answers: Iterator[Prediction] = iter(())
    if good:
        pixels = torch.stack([encoder.preprocess(image) for _, image in good])
        answers = iter(head.answer(encoder.encode_images(pixels, precision)))
    out: list[Explanation] = []
    for name, image, error in decoded:
        if error is not None:
            out.append(Explanation(name, Prediction(name, [], [], error)))
            continue
        answer = next(answers)
        answer.source = name
        explanation = Explanation(name, answer, image=image)
        if answer.error is None:
            chosen = fixed if fixed is not None else chosen_labels(head, answer, top_k)
            explanation.labels = [label for label, _, _ in chosen]
            explanation.scores = [score for _, score, _ in chosen] if fixed is None else \
                _scores_of(answer, explanation.labels)
            explanation._targets = [vector for _, _, vector in chosen]  # type: ignore[attr-defined]
        out.append(explanation)
    todo = [e for e in out if e.error is None and e.labels]
    if todo:
        targets = [torch.stack(e._targets) for e in todo]  # type: ignore[attr-defined]
        maps = image_heatmaps(encoder, [e.image for e in todo], targets, method=method, upscale=upscale)
        for explanation, heat in zip(todo, maps, strict=True):
            explanation.heatmaps = heat
    for explanation in out:
        explanation.__dict__.pop("_targets", None)
    return out


def chosen_labels(head: Head, answer: Prediction, top_k: int) -> list[tuple[str, float | None, torch.Tensor]]:
    """(label, score, unit column) for each label this answer explains, through the head's own weights."""
    inner = getattr(head, "inner", head)  # a rejector explains what its head answered (the reject label: nothing)
    if inner.kind == "tree":
        classes = inner.tree_classifier.node_classifier
        levels = inner.tree_classifier.tree.level_names()
        record = answer.record or {}
        picked = [(record.get(level), record.get(f"{level}_probability")) for level in levels]
        picked = [(label, score) for label, score in picked if label is not None]
    elif inner.kind == "multilabel":
        classes = inner.classifier
        picked = list(zip(answer.labels, answer.scores, strict=True))
    else:
        classes = inner.classifier
        picked = list(zip(answer.labels, answer.scores, strict=True))[:top_k]
    names = list(classes.classnames)
    weights = classes.weights
    out = []
    for label, score in picked:
        if label in names:
            out.append((label, None if score is None else float(score), weights[:, names.index(label)].float()))
    return out


def _scores_of(answer: Prediction, labels: list[str]) -> list[float | None]:
    scores = dict(zip(answer.labels, answer.scores, strict=True))
    return [scores.get(label) for label in labels]


