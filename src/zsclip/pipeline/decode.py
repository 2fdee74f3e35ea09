"""Decoding datasets for the DataLoader: batches of preprocessed pixels built inside worker processes.

Each worker builds whole batches, so a batch is one unit of inter-process traffic, and every image
inside it is decoded under its own try: a bad file costs its own row, never its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..data.images import MAX_PIXELS, check_size, decode_bytes, load_image, read_image_bytes, to_rgb
from ..data.shards import IMAGE_KEYS, sample_target, shard_samples
from ..data.sources import Source
from ..data.urls import URL_TIMEOUT_S
from ..errors import ImageReadError
from .device_decode import JpegBytes, read_for_device

#: What the pipeline decodes: a source (path or URL, maybe carrying an error) or an image already in memory.
Item = Source | Image.Image


def item_name(item: Item, index: int) -> str:
    """How an item is named in results and errors (an in-memory image by its position)."""
    return item.name if isinstance(item, Source) else f"<image {index}>"


class DecodedBatches(Dataset):
    """Batch ``i`` of ``items``, decoded and preprocessed; failures carry their reason."""

    def __init__(
        self,
        items: Sequence[Item],
        batch_size: int,
        transform: Callable[[Image.Image], torch.Tensor],
        target_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
        draft: bool = True,
        url_timeout: float = URL_TIMEOUT_S,
        device_decode: bool = False,
    ) -> None:
        self.items = list(items)
        self.device_decode = device_decode
        self.batch_size = batch_size
        self.transform = transform
        self.target_size = target_size
        self.max_pixels = max_pixels
        self.draft = draft
        self.url_timeout = url_timeout

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def __getitem__(self, index: int) -> dict:
        start = index * self.batch_size
        items = self.items[start : start + self.batch_size]
        errors: list[str | None] = []
        pixels = []
        kinds: list[str] = []  # per item: "pixels" (decoded here), "jpeg" (bytes for the device), "error"
        jpegs: list[torch.Tensor] = []
        orientations: list[int] = []
        for item in items:
            error = item.error if isinstance(item, Source) else None
            kind = "error"
            if error is None:
                try:
                    if isinstance(item, Source) and self.device_decode:
                        read = read_for_device(read_image_bytes(item.name, timeout=self.url_timeout), self.target_size,
                                               self.max_pixels, self.transform, self.draft)
                        if isinstance(read, JpegBytes):
                            jpegs.append(read.data)
                            orientations.append(read.orientation)
                            kind = "jpeg"
                        else:
                            pixels.append(read)
                            kind = "pixels"
                    else:
                        if isinstance(item, Source):
                            image = load_image(item.name, self.target_size, self.max_pixels,
                                               timeout=self.url_timeout, draft=self.draft)
                        else:
                            check_size(*item.size, self.target_size, self.max_pixels)
                            image = to_rgb(item)
                        pixels.append(self.transform(image))
                        kind = "pixels"
                except ImageReadError as failure:
                    error = str(failure)
                except Exception as failure:  # a transform bug on one odd image must not end the batch
                    error = f"preprocessing failed: {type(failure).__name__}: {failure}"
            errors.append(error)
            kinds.append(kind)
        stacked = torch.stack(pixels) if pixels else torch.empty(0)
        names = [item_name(item, start + i) for i, item in enumerate(items)]
        batch = {"names": names, "errors": errors, "pixels": stacked}
        if self.device_decode:
            batch.update(kinds=kinds, jpegs=jpegs, orientations=orientations)
        return batch


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
        draft: bool = True,
        device_decode: bool = False,
    ) -> None:
        self.shards, self.classnames = list(shards), list(classnames)
        self.batch_size, self.transform = batch_size, transform
        self.target_size, self.max_pixels, self.draft = target_size, max_pixels, draft
        self.device_decode = device_decode

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        shards = self.shards if info is None else self.shards[info.id :: info.num_workers]
        lookup = {name: index for index, name in enumerate(self.classnames)}
        batch: list[tuple[str, int, torch.Tensor | None, str | None]] = []
        for shard in shards:
            for name, fields, error in shard_samples(shard):
                batch.append(self._decode(name, fields, error, lookup))
                if len(batch) == self.batch_size:
                    yield _collate(batch, self.device_decode)
                    batch = []
        if batch:
            yield _collate(batch, self.device_decode)

    def _decode(self, name, fields, error, lookup):
        if error is not None:
            return name, -1, None, error
        try:
            # unlabelled shards (classify, embed) have no class names: their labels are not read
            target = sample_target(fields, lookup, len(self.classnames)) if self.classnames else -1
            data = next((fields[key] for key in IMAGE_KEYS if key in fields), None)
            if data is None:
                raise ValueError(f"no image ({', '.join(IMAGE_KEYS)})")
            if self.device_decode:
                return name, target, read_for_device(data, self.target_size, self.max_pixels, self.transform,
                                                     self.draft), None
            return name, target, self.transform(decode_bytes(data, self.target_size, self.max_pixels,
                                                                     draft=self.draft)), None
        except (ImageReadError, ValueError) as failure:
            return name, -1, None, str(failure)
        except Exception as failure:  # one odd sample must not end the shard
            return name, -1, None, f"preprocessing failed: {type(failure).__name__}: {failure}"


def _collate(batch: list[tuple[str, int, torch.Tensor | JpegBytes | None, str | None]],
             device_decode: bool = False) -> dict:
    pixels = [p for _, _, p, _ in batch if isinstance(p, torch.Tensor)]
    collated = {"names": [n for n, _, _, _ in batch], "targets": [t for _, t, _, _ in batch],
                "errors": [e for _, _, _, e in batch], "pixels": torch.stack(pixels) if pixels else torch.empty(0)}
    if device_decode:
        jpegs = [p for _, _, p, _ in batch if isinstance(p, JpegBytes)]
        collated.update(kinds=["jpeg" if isinstance(p, JpegBytes) else "pixels" if p is not None else "error"
                               for _, _, p, _ in batch],
                        jpegs=[j.data for j in jpegs], orientations=[j.orientation for j in jpegs])
    return collated
