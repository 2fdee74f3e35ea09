"""One call from images and targets to image-sized heatmaps (the entry the tasks use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from ..encoders.base import Encoder


def image_heatmaps(encoder: Encoder, images: Sequence[Image.Image], targets: Sequence[torch.Tensor], *,
                   method: str | None = None, upscale: int | None = None) -> list[list[np.ndarray]]:
    """For each image, one float32 [height, width] map per row of its targets ([K_i, D], unit vectors in the
    joint space), in the image's own pixels. One forward (and for ``gradcam`` one backward per target) for
    the whole batch; nothing is kept after it."""
    import torch

    from .geometry import on_image, view_box
    from .methods import DEFAULT_METHOD, grid_maps
    from .towers import dense_tower

    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} target sets")
    if not images:
        return []
    counts = [len(t) for t in targets]
    most = max(counts)
    if most == 0:
        return [[] for _ in images]
    tower = dense_tower(encoder)
    pixels = torch.stack([encoder.preprocess(image) for image in images]).to(encoder.device)
    padded = torch.zeros(len(images), most, encoder.embed_dim)
    for row, (target, count) in enumerate(zip(targets, counts, strict=True)):
        if count:
            padded[row, :count] = target.float().reshape(count, -1)
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        maps = grid_maps(tower, pixels, padded, method or DEFAULT_METHOD, upscale)
    finally:
        encoder.model.train(was_training)
    out = []
    for row, (image, count) in enumerate(zip(images, counts, strict=True)):
        width, height = image.size
        box = view_box(encoder, width, height)
        out.append([on_image(maps[row, k], width, height, box) for k in range(count)])
    return out


__all__ = ["image_heatmaps"]
