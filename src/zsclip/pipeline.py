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
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from .classifier import ZeroShotClassifier
from .datasets import IMAGE_KEYS, LabelledCollection, sample_target, shard_samples
from .encoders.base import Encoder
from .images import MAX_PIXELS, ImageReadError, decode_bytes, load_image
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


class ShardBatches(IterableDataset):
    """Batches of decoded samples streamed from WebDataset shards; each worker reads its own
    shards (shard i goes to worker i mod W). A bad sample costs its own row, with its reason."""

    def __init__(
        self,
        shards: Sequence[str],
        classnames: Sequence[str],
        batch_size: int,
        transform: Callable[[Image.Image], torch.Tensor],
        target_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.shards, self.classnames = list(shards), list(classnames)
        self.batch_size, self.transform = batch_size, transform
        self.target_size, self.max_pixels = target_size, max_pixels

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        shards = self.shards if info is None else self.shards[info.id :: info.num_workers]
        lookup = {name: index for index, name in enumerate(self.classnames)}
        batch: list[tuple[str, int, torch.Tensor | None, str | None]] = []
        for shard in shards:
            for name, fields, error in shard_samples(shard):
                batch.append(self._decode(name, fields, error, lookup))
                if len(batch) == self.batch_size:
                    yield _collate(batch)
                    batch = []
        if batch:
            yield _collate(batch)

    def _decode(self, name, fields, error, lookup):
        if error is not None:
            return name, -1, None, error
        try:
            target = sample_target(fields, lookup, len(self.classnames))
            data = next((fields[key] for key in IMAGE_KEYS if key in fields), None)
            if data is None:
                raise ValueError(f"no image ({', '.join(IMAGE_KEYS)})")
            return name, target, self.transform(decode_bytes(data, self.target_size, self.max_pixels)), None
        except (ImageReadError, ValueError) as failure:
            return name, -1, None, str(failure)
        except Exception as failure:  # one odd sample must not end the shard
            return name, -1, None, f"preprocessing failed: {type(failure).__name__}: {failure}"


def _collate(batch: list[tuple[str, int, torch.Tensor | None, str | None]]) -> dict:
    pixels = [p for _, _, p, _ in batch if p is not None]
    return {"names": [n for n, _, _, _ in batch], "targets": [t for _, t, _, _ in batch],
            "errors": [e for _, _, _, e in batch], "pixels": torch.stack(pixels) if pixels else torch.empty(0)}


def labelled_feature_batches(
    collection: LabelledCollection,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    precision: str = "auto",
    max_pixels: int = MAX_PIXELS,
) -> Iterator[tuple[list[str], list[str | None], list[int], torch.Tensor]]:
    """(names, errors, targets, features of the decoded ones) per batch, for any collection."""
    workers = default_workers() if workers is None else workers
    if not collection.shards:
        targets = [item.target for item in collection.items]
        position = 0
        for names, errors, features in feature_batches(collection.items, encoder, batch_size=batch_size,
                                                       workers=workers, precision=precision,
                                                       max_pixels=max_pixels):
            yield names, errors, targets[position : position + len(names)], features
            position += len(names)
        return
    dataset = ShardBatches(collection.shards, collection.classnames, batch_size, encoder.image_transform(),
                           encoder.image_size, max_pixels)
    for batch, features in _encoded(dataset, encoder, min(workers, len(collection.shards)), precision):
        yield batch["names"], batch["errors"], batch["targets"], features


def _encoded(dataset: Dataset, encoder: Encoder, workers: int, precision: str) -> Iterator[tuple[dict, torch.Tensor]]:
    """Each batch the dataset yields (decoded in ``workers`` processes) with the normalised
    features [n_ok, D] of its decoded images."""
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=encoder.device.type == "cuda", prefetch_factor=2 if workers else None)
    for batch in loader:
        pixels = batch["pixels"]
        features = encoder.encode_images(pixels, precision) if len(pixels) else torch.empty(0, encoder.embed_dim)
        yield batch, features


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
    for batch, features in _encoded(dataset, encoder, workers, precision):
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
