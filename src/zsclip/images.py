"""Turn image files into RGB PIL images the way every model expects them.

EXIF orientation is applied (phones store rotated pixels), transparency is composited over
white, and every mode (L, P, CMYK, I;16, ...) ends as RGB.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

from .errors import InputError


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB copy of ``image``: EXIF rotation applied, alpha over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as an upright RGB image (one clear error when it can't)."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None
