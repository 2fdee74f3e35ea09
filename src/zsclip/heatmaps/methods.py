"""Text-conditioned heatmaps: where in an image the model sees a class, for a batch of images.

A *target* is a vector in the joint space: a classifier column (a class's prompt ensemble, a linear
probe's or an adapted head's column) or an encoded text. Two methods, one call:

- ``gradcam``: Grad-CAM (Selvaraju et al.) on the grid entering the image tower's last block (a ResNet's
  last feature map): score = cos(image embedding, target); map = ReLU(sum_c mean_hw(d score/d A_c) * A_c).
  One forward with gradients per image batch and one backward per target; the graph is freed when the
  batch's maps are made, and ``torch.autograd.grad`` fills no parameter's ``.grad``.
- ``patch``: training-free patch similarity: cos(per-position embedding, target), the per-position
  embedding read through the pooling layer's (or last block's) value path, the final norm and the
  projection (see towers.py). No gradients.

Maps come at grid resolution [B, K, h, w]; geometry.py puts them on each image's own pixels.
``DEFAULT_METHOD`` is the one the pointing game measured best (docs/round4-explain.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .towers import DenseTower, auto_upscale

METHODS = ("patch", "gradcam")
#: chosen by benchmarks/explain_pointing.py (docs/round4-explain.md)
DEFAULT_METHOD = "patch"


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown heatmap method {method!r}: use {', '.join(METHODS)}")
    return method


def grid_maps(tower: DenseTower, pixels: torch.Tensor, targets: torch.Tensor, method: str = DEFAULT_METHOD,
              upscale: int | None = None) -> torch.Tensor:
    """Heatmaps [B, K, h, w] (float32, CPU) of ``targets`` [B, K, D] (one set per image) on ``pixels``
    [B, 3, H, W] preprocessed as the model's own transform does. ``upscale`` None: ``auto_upscale``."""
    check_method(method)
    factor = auto_upscale(tower) if upscale is None else int(upscale)
    if factor < 1:
        raise InputError(f"upscale {upscale!r}: use 1 (the model's own size) or more")
    if factor > 1:
        pixels = F.interpolate(pixels, scale_factor=factor, mode="bicubic", align_corners=False)
    if method == "patch":
        with torch.inference_mode():
            dense = F.normalize(tower.patches(pixels).float(), dim=1)
            return torch.einsum("bdhw,bkd->bkhw", dense, targets.to(dense.device, dense.dtype)).cpu()
    return _gradcam(tower, pixels, targets)


def _gradcam(tower: DenseTower, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False), torch.enable_grad():
        # the graph must exist even when the model's parameters are frozen; no gradient reaches the pixels
        pixels = pixels.detach().clone().requires_grad_(True)
        grid, pooled = tower.activations(pixels)
        scores = torch.einsum("bd,bkd->bk", F.normalize(pooled.float(), dim=-1),
                              targets.to(pooled.device, torch.float32))
        maps = []
        count = scores.shape[1]
        for k in range(count):
            (gradient,) = torch.autograd.grad(scores[:, k].sum(), grid, retain_graph=k + 1 < count)
            weights = gradient.float().mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((weights * grid.detach().float()).sum(dim=1)))
        del grid, pooled, scores
    return torch.stack(maps, dim=1).cpu()


__all__ = ["METHODS", "DEFAULT_METHOD", "grid_maps", "check_method"]
