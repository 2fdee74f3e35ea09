"""A heatmap drawn over its image: what a person looks at (the raw values go to .npy for programs)."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: A perceptually ordered dark-blue -> red -> yellow ramp (anchor colours, linearly interpolated).
_RAMP = np.array([(20, 10, 70), (60, 30, 150), (150, 40, 140), (220, 70, 60), (250, 160, 30), (252, 250, 150)],
                 dtype=np.float32)


def normalised(heat: np.ndarray) -> np.ndarray:
    """Values scaled to 0..1 over this map (a flat map is all zeros)."""
    low, high = float(np.min(heat)), float(np.max(heat))
    if not high > low:
        return np.zeros_like(heat, dtype=np.float32)
    return ((heat - low) / (high - low)).astype(np.float32)


def colourise(unit: np.ndarray) -> np.ndarray:
    """0..1 values -> uint8 RGB [H, W, 3] on the ramp."""
    position = np.clip(unit, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    fraction = (position - low)[..., None]
    return (_RAMP[low] * (1 - fraction) + _RAMP[low + 1] * fraction).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """``image`` (RGB) with ``heat`` ([H, W], the image's size) blended over it; the hottest places most."""
    unit = normalised(heat)
    colour = Image.fromarray(colourise(unit), "RGB")
    mask = Image.fromarray((np.sqrt(unit) * alpha * 255).astype(np.uint8), "L")
    return Image.composite(colour, image.convert("RGB"), mask)


__all__ = ["overlay", "colourise", "normalised"]
