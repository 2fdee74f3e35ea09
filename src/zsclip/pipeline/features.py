"""Images become features here, and only here: sources -> decoded pixels -> normalised features.

Decoding and preprocessing run in DataLoader worker processes, overlapped with the model; memory
is bounded by the batches in flight, whatever the number of inputs. Every consumer (classify,
eval, the store, the service's batch jobs, Ray actors) reads features through these functions,
so they all get the same robustness (an error row per bad image) and the same speed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.collections import LabelledCollection
from ..encoders.base import Encoder
from ..options import RunOptions
from .decode import DecodedBatches, Item, ShardBatches


def feature_batches(
    items: Sequence[Item],
    encoder: Encoder,
    options: RunOptions | None = None,
) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """Per batch, in input order: item names, their errors (None = decoded), and the normalised
    features [n_ok, D] of the decoded ones."""
    options = options or RunOptions()
    dataset = DecodedBatches(items, options.batch_size, encoder.image_transform(), encoder.image_size,
                             options.max_pixels, options.draft, options.url_timeout)
    for batch, features in _encoded(dataset, encoder, _workers_for(options, len(dataset)), options.precision):
        yield batch["names"], batch["errors"], features


def labelled_feature_batches(
    collection: LabelledCollection,
    encoder: Encoder,
    options: RunOptions | None = None,
) -> Iterator[tuple[list[str], list[str | None], list[int], torch.Tensor]]:
    """(names, errors, targets, features of the decoded ones) per batch, for any labelled collection."""
    options = options or RunOptions()
    if not collection.shards:
        targets = [item.target for item in collection.items]
        position = 0
        for names, errors, features in feature_batches(collection.items, encoder, options):
            yield names, errors, targets[position : position + len(names)], features
            position += len(names)
        return
    dataset = ShardBatches(collection.shards, collection.classnames, options.batch_size, encoder.image_transform(),
                           encoder.image_size, options.max_pixels, options.draft)
    workers = min(options.decode_workers, len(collection.shards))
    for batch, features in _encoded(dataset, encoder, workers, options.precision):
        yield batch["names"], batch["errors"], batch["targets"], features


def _workers_for(options: RunOptions, batches: int) -> int:
    """Worker processes for ``batches`` batches: none for a single batch (starting a process to
    decode the only batch while this one waits gains nothing), else at most one per batch."""
    return 0 if batches <= 1 else min(options.decode_workers, batches)


def _encoded(dataset: Dataset, encoder: Encoder, workers: int, precision: str) -> Iterator[tuple[dict, torch.Tensor]]:
    """Each batch the dataset yields (decoded in ``workers`` processes) with the normalised
    features [n_ok, D] of its decoded images."""
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=encoder.device.type == "cuda", prefetch_factor=2 if workers else None)
    for batch in loader:
        pixels = batch["pixels"]
        features = encoder.encode_images(pixels, precision) if len(pixels) else torch.empty(0, encoder.embed_dim)
        yield batch, features
