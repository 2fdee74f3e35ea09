"""Hugging Face Parquet / Arrow splits -> features: rows streamed by part (consecutive Parquet row groups,
an Arrow file), decoded in worker processes (part i in worker i mod W), a bad row costing its own row."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ..data.hf import HFTable, table_rows
from ..data.images import MAX_PIXELS, decode_bytes, load_image
from ..encoders.base import Encoder
from ..errors import ImageReadError
from ..options import RunOptions
from .decode import _collate
from .features import _encoded


class TableBatches(IterableDataset):
    """Batches of decoded rows of an ``HFTable``: {names, targets, errors, pixels}."""

    def __init__(self, table: HFTable, batch_size: int, transform: Callable[[Image.Image], torch.Tensor],
                 target_size: int | None = None, max_pixels: int = MAX_PIXELS, draft: bool = True) -> None:
        self.table, self.batch_size, self.transform = table, batch_size, transform
        self.target_size, self.max_pixels, self.draft = target_size, max_pixels, draft

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        parts = self.table.parts if info is None else self.table.parts[info.id :: info.num_workers]
        batch = []
        for part in parts:
            for row in table_rows(self.table, part):
                batch.append(self._decode(*row))
                if len(batch) == self.batch_size:
                    yield _collate(batch)
                    batch = []
        if batch:
            yield _collate(batch)

    def _decode(self, name: str, data: bytes | None, path: str | None, target: int, error: str | None):
        if error is not None:
            return name, target, None, error
        try:
            image = (decode_bytes(data, self.target_size, self.max_pixels, draft=self.draft) if data
                     else load_image(path, self.target_size, self.max_pixels, draft=self.draft))
            return name, target, self.transform(image), None
        except ImageReadError as failure:  # a path-only row names the file it tried (relative: to its data file)
            return name, target, None, str(failure) if data else f"image path {path}: {failure}"
        except Exception as failure:  # one odd row must not end the part
            return name, target, None, f"preprocessing failed: {type(failure).__name__}: {failure}"


def table_feature_batches(table: HFTable, encoder: Encoder, options: RunOptions | None = None
                          ) -> Iterator[tuple[list[str], list[str | None], list[int], torch.Tensor]]:
    """(names, errors, targets, features of the decoded ones) per batch of a Hugging Face split."""
    options = options or RunOptions()
    dataset = TableBatches(table, options.batch_size, encoder.image_transform(), encoder.image_size,
                           options.max_pixels, options.draft)
    workers = min(options.decode_workers, len(table.parts))
    for batch, features in _encoded(dataset, encoder, workers, options.precision):
        yield batch["names"], batch["errors"], batch["targets"], features


__all__ = ["TableBatches", "table_feature_batches"]
