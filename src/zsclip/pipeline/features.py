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
from ..data.images import decode_bytes
from ..encoders.base import Encoder
from ..errors import InputError
from ..options import RunOptions
from .decode import DecodedBatches, Item, ShardBatches
from .device_decode import (
    DevicePreprocessing,
    JpegBytes,
    decode_on_device,
    device_decoding_supported,
    device_preprocessing,
)


def feature_batches(
    items: Sequence[Item],
    encoder: Encoder,
    options: RunOptions | None = None,
) -> Iterator[tuple[list[str], list[str | None], torch.Tensor]]:
    """Per batch, in input order: item names, their errors (None = decoded), and the normalised
    features [n_ok, D] of the decoded ones."""
    options = options or RunOptions()
    transform = encoder.image_transform()
    on_device = device_preprocessing_for(encoder, options, transform)
    dataset = DecodedBatches(items, options.batch_size, transform, encoder.image_size, options.max_pixels,
                             options.draft, options.url_timeout, device_decode=on_device is not None)
    for batch, features in _encoded(dataset, encoder, _workers_for(options, len(dataset)), options.precision,
                                    _assembler(encoder, options, transform, on_device)):
        yield batch["names"], batch["errors"], features


def _assembler(encoder: Encoder, options: RunOptions, transform, on_device: DevicePreprocessing | None):
    """The function that finishes device-decoded batches, or None on the CPU path."""
    if on_device is None:
        return None

    def fallback(data: bytes) -> torch.Tensor:
        return transform(decode_bytes(data, encoder.image_size, options.max_pixels, draft=options.draft))

    return lambda batch: assemble_batch(batch, encoder.device, on_device, fallback)


def device_preprocessing_for(encoder: Encoder, options: RunOptions, transform) -> DevicePreprocessing | None:
    """The device preprocessing this run uses, or None for the CPU path (see ``RunOptions.decode``)."""
    if options.decode == "cpu" or not device_decoding_supported(encoder.device):
        if options.decode == "device" and not device_decoding_supported(encoder.device):
            raise InputError(f"decode=device: JPEGs cannot be decoded on {encoder.device}; use decode=cpu")
        return None
    if options.decode == "auto" and encoder.device.type != "cuda":
        return None
    preprocessing = device_preprocessing(transform)
    if preprocessing is None and options.decode == "device":
        raise InputError(f"decode=device: {encoder.name}'s preprocessing is not open_clip's standard resize/crop/"
                         "normalise, so it cannot be moved to the device; use decode=cpu (or auto)")
    return preprocessing


def assemble_batch(batch: dict, device: torch.device, preprocessing: DevicePreprocessing,
                   fallback) -> torch.Tensor:
    """The batch's pixels in item order on ``device``: JPEG bytes decoded there, images the workers
    decoded copied over; a JPEG that fails both decoders becomes an error in ``batch["errors"]``."""
    jpegs = [JpegBytes(data, orientation) for data, orientation in zip(batch["jpegs"], batch["orientations"],
                                                                       strict=True)]
    decoded = iter(decode_on_device(jpegs, device, preprocessing, fallback))
    decoded_here = iter(batch["pixels"])
    ordered = []
    for index, kind in enumerate(batch["kinds"]):
        if kind == "pixels":
            ordered.append(next(decoded_here).to(device, non_blocking=True))
        elif kind == "jpeg":
            result = next(decoded)
            if isinstance(result, str):
                batch["errors"][index] = result
            else:
                ordered.append(result)
    return torch.stack(ordered) if ordered else torch.empty(0)


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
    transform = encoder.image_transform()
    on_device = device_preprocessing_for(encoder, options, transform)
    dataset = ShardBatches(collection.shards, collection.classnames, options.batch_size, transform,
                           encoder.image_size, options.max_pixels, options.draft, device_decode=on_device is not None)
    workers = min(options.decode_workers, len(collection.shards))
    for batch, features in _encoded(dataset, encoder, workers, options.precision,
                                    _assembler(encoder, options, transform, on_device)):
        yield batch["names"], batch["errors"], batch["targets"], features


def _workers_for(options: RunOptions, batches: int) -> int:
    """Worker processes for ``batches`` batches: none for a single batch (starting a process to
    decode the only batch while this one waits gains nothing), else at most one per batch."""
    return 0 if batches <= 1 else min(options.decode_workers, batches)


def _encoded(dataset: Dataset, encoder: Encoder, workers: int, precision: str,
             assemble=None) -> Iterator[tuple[dict, torch.Tensor]]:
    """Each batch the dataset yields (decoded in ``workers`` processes) with the normalised
    features [n_ok, D] of its decoded images; ``assemble`` finishes batches whose JPEGs are
    decoded on the device. Batches are pinned on CUDA, so copies to the GPU are asynchronous."""
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=encoder.device.type == "cuda", prefetch_factor=2 if workers else None)
    for batch in loader:
        pixels = assemble(batch) if assemble is not None else batch["pixels"]
        features = encoder.encode_images(pixels, precision) if len(pixels) else torch.empty(0, encoder.embed_dim)
        yield batch, features
