"""``ZeroShotClassifier.predict``: images in, a ``TopK`` row per image out.

The convenience call of the Python API. Files and PIL images go through the pipeline (the one
image path of zsclip: worker processes, draft decoding, an error row per bad image), which sits
below the heads, so this module imports down the layers only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..data.sources import Source
from ..errors import InputError, ZsclipWarning
from ..options import RunOptions

if TYPE_CHECKING:  # torch, PIL and the pipeline load with the first prediction: ``TopK`` alone needs none
    import torch
    from PIL import Image

    from ..encoders.base import Encoder
    from .zeroshot import ZeroShotClassifier


class TopK(list):
    """``predict``'s row for one image: a list of (label, probability), best first, that also says
    which input it is (``source``) and, for an image that could not be read, why (``error``; the
    list is then empty)."""

    def __init__(self, pairs: Iterable[tuple[str, float]] = (), source: str = "", error: str | None = None) -> None:
        super().__init__(pairs)
        self.source, self.error = source, error

    def __repr__(self) -> str:
        return f"TopK({list(self)!r}, error={self.error!r})" if self.error else f"TopK({list(self)!r})"


def predict_images(
    classifier: ZeroShotClassifier,
    images: Image.Image | str | os.PathLike | Sequence[Image.Image | str | os.PathLike] | torch.Tensor,
    encoder: Encoder,
    *,
    top_k: int = 5,
    options: RunOptions | None = None,
    scale: float | None = None,
) -> list[TopK]:
    """A ``TopK`` row per image; an unreadable image gets an empty row with its ``error`` and one
    ``ZsclipWarning`` naming it."""
    import torch
    from PIL import Image

    from ..pipeline import feature_batches

    options = options or RunOptions()
    if isinstance(images, torch.Tensor):
        pixels = images.unsqueeze(0) if images.dim() == 3 else images
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels of shape {tuple(images.shape)}: expected [B, 3, H, W] preprocessed images")
        if not len(pixels):
            return []
        features = torch.cat([encoder.encode_images(pixels[i : i + options.batch_size], options.precision)
                              for i in range(0, len(pixels), options.batch_size)])
        return _rows(classifier, features, [f"<image {n}>" for n in range(len(pixels))], [None] * len(pixels),
                     top_k, scale)
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    items = [image if isinstance(image, Image.Image) else Source(os.fspath(image)) for image in images]
    if any(isinstance(item, Image.Image) for item in items):
        options = options.with_(workers=0)  # images in memory: decoding them elsewhere would only copy them
    rows: list[TopK] = []
    for names, errors, features in feature_batches(items, encoder, options):
        rows += _rows(classifier, features, names, errors, top_k, scale)
    for row in rows:
        if row.error:
            warnings.warn(f"cannot read image {row.source}: {row.error}", ZsclipWarning, stacklevel=4)
    return rows


def _rows(classifier: ZeroShotClassifier, features: torch.Tensor, names: list[str], errors: list[str | None],
          top_k: int, scale: float | None) -> list[TopK]:
    """Rows in input order: the decoded ones' top-k, an empty row with its error for the others."""
    scores, indices = classifier.top_k(features, top_k, scale) if len(features) else (None, None)
    rows, position = [], 0
    for name, error in zip(names, errors, strict=True):
        if error is not None:
            rows.append(TopK((), name, error))
            continue
        labels = [classifier.classnames[i] for i in indices[position].tolist()]
        rows.append(TopK(zip(labels, scores[position].tolist(), strict=True), name))
        position += 1
    return rows


__all__ = ["TopK", "predict_images"]
