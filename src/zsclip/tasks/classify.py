"""Classify images: inputs -> sources -> features (the pipeline) -> top-k rows, streamed.

``classify`` is the library call under ``zsclip classify``, the service and the Ray runner: it
yields one ``Prediction`` per input, in input order, and a bad input is a row with its error,
never an exception that ends the run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image

from ..classifier import ZeroShotClassifier
from ..data.sources import Source, expand_inputs
from ..encoders.base import Encoder
from ..errors import InputError, ZsclipWarning
from ..options import RunOptions
from ..pipeline import feature_batches
from ..pipeline.decode import Item
from .models import Classes, Templates, resolve_classifier

if TYPE_CHECKING:
    from ..hierarchy import Rejector


@dataclass
class Prediction:
    """One input's result: top-k labels and scores, best first, or the reason it failed."""

    source: str
    labels: list[str]
    scores: list[float]
    error: str | None = None


class TopK(list):
    """``predict``'s row for one image: a list of (label, probability), best first, that also says
    which input it is (``source``) and, for an image that could not be read, why (``error``; the
    list is then empty)."""

    def __init__(self, pairs: Iterable[tuple[str, float]] = (), source: str = "", error: str | None = None) -> None:
        super().__init__(pairs)
        self.source, self.error = source, error

    def __repr__(self) -> str:
        return f"TopK({list(self)!r}, error={self.error!r})" if self.error else f"TopK({list(self)!r})"


def classify(
    inputs: str | os.PathLike | Iterable[str | os.PathLike | Source],
    labels: Classes | None = None,
    *,
    classifier: ZeroShotClassifier | str | os.PathLike | None = None,
    templates: Templates = None,
    encoder: Encoder | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    top_k: int = 5,
    scale: float | None = None,
    options: RunOptions | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[Prediction]:
    """Classify image files, folders, glob patterns or URLs into ``labels`` (or with ``classifier``).

    Yields one ``Prediction`` per image, in input order, streamed batch by batch: memory stays flat
    for any number of inputs. An input that is missing, unreadable, not an image, too large or
    unreachable yields a ``Prediction`` whose ``error`` says why; the others are classified.
    See ``resolve_classifier`` for how labels, classifier and model combine.
    """
    options = options or RunOptions()
    sources = list(expand_sources(inputs))
    encoder, classifier = resolve_classifier(labels, classifier=classifier, templates=templates, encoder=encoder,
                                             model=model, pretrained=pretrained, options=options, cache=cache,
                                             cache_dir=cache_dir)
    yield from classify_items(sources, classifier, encoder, top_k=top_k, scale=scale, options=options)


def expand_sources(inputs: str | os.PathLike | Iterable[str | os.PathLike | Source]) -> Iterator[Source]:
    """Sources from what the user named (one or many paths, folders, globs, URLs; ``Source`` as is)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, Source):
            yield item
        else:
            yield from expand_inputs([os.fspath(item)])


def classify_items(
    items: Sequence[Item],
    classifier: ZeroShotClassifier,
    encoder: Encoder,
    *,
    top_k: int = 5,
    scale: float | None = None,
    options: RunOptions | None = None,
    rejector: Rejector | None = None,
    features: Callable[[Sequence[Item]], Iterable[tuple[list[str], list[str | None], torch.Tensor]]] | None = None,
) -> Iterator[Prediction]:
    """Predictions for already expanded ``items`` (sources or PIL images), in order, streamed.

    With ``rejector`` (open-set rejection, see zsclip.hierarchy.openset), an image whose open-set
    score is below its threshold gets the single label ``rejector.label`` scored with that score.
    ``features`` replaces the local pipeline as the source of (names, errors, features) batches
    (``zsclip.cluster`` passes a Ray Data job)."""
    classifier.check_encoder(encoder)
    batches = features(items) if features is not None else feature_batches(items, encoder, options)
    for names, errors, features in batches:
        scores, indices = classifier.top_k(features, top_k, scale)
        kept = rejector.scores(classifier, features).tolist() if rejector is not None and len(features) else []
        row = 0
        for name, error in zip(names, errors, strict=True):
            if error is not None:
                yield Prediction(name, [], [], error)
                continue
            if rejector is not None and kept[row] < rejector.threshold:
                yield Prediction(name, [rejector.label], [kept[row]])
            else:
                yield Prediction(name, [classifier.classnames[i] for i in indices[row].tolist()], scores[row].tolist())
            row += 1


def predict_images(
    classifier: ZeroShotClassifier,
    images: Image.Image | str | os.PathLike | Sequence[Image.Image | str | os.PathLike] | torch.Tensor,
    encoder: Encoder,
    *,
    top_k: int = 5,
    options: RunOptions | None = None,
    scale: float | None = None,
) -> list[TopK]:
    """``ZeroShotClassifier.predict``: a ``TopK`` row per image; an unreadable image gets an empty
    row with its ``error`` and one ``ZsclipWarning`` naming it."""
    options = options or RunOptions()
    if isinstance(images, torch.Tensor):
        pixels = images.unsqueeze(0) if images.dim() == 3 else images
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels of shape {tuple(images.shape)}: expected [B, 3, H, W] preprocessed images")
        features = torch.cat([encoder.encode_images(pixels[i : i + options.batch_size], options.precision)
                              for i in range(0, len(pixels), options.batch_size)]) if len(pixels) else None
        if features is None:
            return []
        scores, indices = classifier.top_k(features, top_k, scale)
        return [TopK(zip([classifier.classnames[i] for i in row_i], row_v, strict=True), f"<image {n}>")
                for n, (row_v, row_i) in enumerate(zip(scores.tolist(), indices.tolist(), strict=True))]
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    items: list[Item] = [image if isinstance(image, Image.Image) else Source(os.fspath(image)) for image in images]
    if any(isinstance(item, Image.Image) for item in items):
        options = options.with_(workers=0)  # images in memory: decoding them elsewhere would only copy them
    rows = []
    for prediction in classify_items(items, classifier, encoder, top_k=top_k, scale=scale, options=options):
        if prediction.error:
            warnings.warn(f"cannot read image {prediction.source}: {prediction.error}", ZsclipWarning, stacklevel=4)
        rows.append(TopK(zip(prediction.labels, prediction.scores, strict=True), prediction.source, prediction.error))
    return rows
