"""The classify pipeline: sources -> decoded pixels (worker processes) -> features -> top-k rows.

Decoding and preprocessing run in DataLoader workers, overlapped with the model. Each worker
builds whole batches, so a batch is one unit of inter-process traffic, and every image inside
it is decoded under its own try: a bad file costs its own row, never its batch.
Memory is bounded by the batches in flight, whatever the number of inputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .classifier import ZeroShotClassifier
from .encoders.base import Encoder
from .images import MAX_PIXELS, ImageReadError, load_image
from .sources import Source


@dataclass
class Prediction:
    """One input's result: top-k labels and scores, best first, or the reason it failed."""

    source: str
    labels: list[str]
    scores: list[float]
    error: str | None = None


class DecodedBatches(Dataset):
    """Batch ``i`` of ``sources``, decoded and preprocessed; failures carry their reason."""

    def __init__(
        self,
        sources: Sequence[Source],
        batch_size: int,
        transform: Callable[[Image.Image], torch.Tensor],
        target_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.sources = list(sources)
        self.batch_size = batch_size
        self.transform = transform
        self.target_size = target_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return math.ceil(len(self.sources) / self.batch_size)

    def __getitem__(self, index: int) -> dict:
        items = self.sources[index * self.batch_size : (index + 1) * self.batch_size]
        errors: list[str | None] = []
        pixels = []
        for source in items:
            error = source.error
            if error is None:
                try:
                    image = load_image(source.name, self.target_size, self.max_pixels)
                    pixels.append(self.transform(image))
                except ImageReadError as failure:
                    error = str(failure)
                except Exception as failure:  # a transform bug on one odd image must not end the batch
                    error = f"preprocessing failed: {type(failure).__name__}: {failure}"
            errors.append(error)
        stacked = torch.stack(pixels) if pixels else torch.empty(0)
        return {"names": [s.name for s in items], "errors": errors, "pixels": stacked}


def feature_batches(
    sources: Sequence[Source],
    encoder: Encoder,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    precision: str = "auto",
    max_pixels: int = MAX_PIXELS,
    draft: bool = True,
) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """Per batch, in input order: source names, their errors (None = decoded), and the
    normalised features [n_ok, D] of the decoded ones. Decoding runs in ``workers`` processes."""
    workers = default_workers() if workers is None else workers
    dataset = DecodedBatches(sources, batch_size, encoder.image_transform(),
                             encoder.image_size if draft else None, max_pixels)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=encoder.device.type == "cuda",
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    for batch in loader:
        pixels = batch["pixels"]
        features = encoder.encode_images(pixels, precision) if len(pixels) else torch.empty(0, encoder.embed_dim)
        yield batch["names"], batch["errors"], features


def classify_sources(
    sources: Sequence[Source],
    classifier: ZeroShotClassifier,
    encoder: Encoder,
    *,
    top_k: int = 5,
    batch_size: int = 64,
    workers: int | None = None,
    precision: str = "auto",
    scale: float | None = None,
    max_pixels: int = MAX_PIXELS,
    draft: bool = True,
) -> Iterator[Prediction]:
    """Predictions for ``sources``, in input order, streamed batch by batch."""
    classifier.check_encoder(encoder)
    k = max(1, min(top_k, len(classifier.classnames)))
    for names, errors, features in feature_batches(sources, encoder, batch_size=batch_size, workers=workers,
                                                   precision=precision, max_pixels=max_pixels, draft=draft):
        scores, indices = classifier.probabilities(features, scale).topk(k, dim=-1)
        row = 0
        for name, error in zip(names, errors, strict=True):
            if error is not None:
                yield Prediction(name, [], [], error)
                continue
            labels = [classifier.classnames[i] for i in indices[row].tolist()]
            yield Prediction(name, labels, scores[row].tolist())
            row += 1


def default_workers() -> int:
    """Decode workers: one per core the process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))
