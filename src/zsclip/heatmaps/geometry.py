"""From a map on the model's grid to a map on the image's own pixels.

The model sees a view of the image: CLIP-style transforms resize the short side and crop the centre
square, SigLIP-style ones squash the whole image to a square. ``view_box`` says which part of the
original that is; ``on_image`` stretches the grid map over that box (bilinear) and fills the rest with
the map's minimum (the model never saw it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..encoders.base import Encoder


def view_box(encoder: Encoder, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in the image's pixels of what the model's transform keeps."""
    if _crops_centre(encoder):
        side = min(width, height) * _crop_fraction(encoder)
        left, top = (width - side) / 2, (height - side) / 2
        return left, top, left + side, top + side
    return 0.0, 0.0, float(width), float(height)


def _crops_centre(encoder: Encoder) -> bool:
    """Whether the transform keeps a centre square (resize the short side, centre crop)."""
    if encoder.backend == "transformers":
        return bool(getattr(encoder.image_processor, "do_center_crop", False))
    steps = getattr(encoder.image_transform(), "transforms", [])
    names = [type(step).__name__ for step in steps]
    if "CenterCrop" in names:
        return True
    return not any(type(step).__name__ == "Resize" and isinstance(step.size, (tuple, list)) and len(step.size) == 2
                   for step in steps)


def _crop_fraction(encoder: Encoder) -> float:
    """Crop side / resized short side (1.0 for open_clip, which resizes to the crop size)."""
    if encoder.backend != "transformers":
        return 1.0
    processor = encoder.image_processor
    crop, size = getattr(processor, "crop_size", None), getattr(processor, "size", None)
    crop_side = _side(crop)
    short = _side(size, "shortest_edge")
    return min(1.0, crop_side / short) if crop_side and short else 1.0


def _side(value, key: str = "height") -> int | None:
    if isinstance(value, int):
        return value
    get = getattr(value, "get", None)
    if callable(get):
        found = get(key) or get("height") or get("shortest_edge")
        return int(found) if found else None
    return None


def on_image(grid_map: torch.Tensor, width: int, height: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """[h, w] map -> float32 [height, width] over ``box`` (bilinear), the map's minimum elsewhere."""
    left, top, right, bottom = box
    inner_w, inner_h = max(1, round(right - left)), max(1, round(bottom - top))
    resized = F.interpolate(grid_map[None, None].float(), size=(inner_h, inner_w), mode="bilinear",
                            align_corners=False)[0, 0].numpy()
    if (inner_w, inner_h) == (width, height):
        return np.ascontiguousarray(resized, dtype=np.float32)
    full = np.full((height, width), float(grid_map.min()), dtype=np.float32)
    x0, y0 = round(left), round(top)
    full[y0:y0 + inner_h, x0:x0 + inner_w] = resized[: height - y0, : width - x0]
    return full


__all__ = ["view_box", "on_image"]
