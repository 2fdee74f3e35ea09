"""JPEG decoding and preprocessing on the model's device (nvJPEG on CUDA), for when the CPU is the
bottleneck: on a GPU the image tower is fast and PIL decoding of large JPEGs is what limits a run.

The split: decoding workers only read bytes and parse headers (size, pixel limit, EXIF orientation:
cheap); the main process decodes the batch's JPEGs in one call with ``torchvision.io.decode_jpeg``
on the device, then resizes, crops and normalises there. Everything else falls back to the exact
CPU path, image by image: other formats, CMYK JPEGs, and any file the device decoder rejects are
decoded with PIL (and a file PIL rejects too is an error row, as on the CPU path).

Only preprocessing this module can reproduce is moved: open_clip's Resize (bicubic or bilinear,
antialiased) + CenterCrop + ToTensor + Normalize. Any other transform (transformers' image
processors, custom ones) keeps the CPU path; ``device_preprocessing`` returns None for them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.images import check_size, decode_bytes
from ..errors import ImageReadError

JPEG_MAGIC = b"\xff\xd8\xff"
#: Largest file read into memory for device decoding (a JPEG of 89 megapixels is far smaller).
MAX_JPEG_BYTES = 256 * 1024 * 1024
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DevicePreprocessing:
    """open_clip's eval transform, as tensor operations: resize the short side to ``size``
    (``interpolation``, antialiased, rounded to uint8 as PIL does), centre-crop ``crop``, scale
    to [0, 1], normalise by ``mean`` / ``std``."""

    size: int
    crop: tuple[int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] (any device) -> float32 [3, crop_h, crop_w] normalised, same device."""
        height, width = image.shape[-2:]
        if width <= height:
            new_width, new_height = self.size, int(self.size * height / width)
        else:
            new_height, new_width = self.size, int(self.size * width / height)
        pixels = image[None].float()
        if (new_height, new_width) != (height, width):
            pixels = F.interpolate(pixels, size=(new_height, new_width), mode=self.interpolation, antialias=True,
                                   align_corners=False)
            pixels = pixels.clamp_(0, 255).round_()  # PIL resizes to uint8: same rounding
        crop_height, crop_width = self.crop
        top = int(round((new_height - crop_height) / 2.0))
        left = int(round((new_width - crop_width) / 2.0))
        if top < 0 or left < 0:  # crop larger than the image: CenterCrop pads with zeros
            pad_h, pad_w = max(0, -top), max(0, -left)
            pixels = F.pad(pixels, (pad_w, crop_width - new_width - pad_w if left < 0 else 0,
                                    pad_h, crop_height - new_height - pad_h if top < 0 else 0))
            top, left = max(0, top), max(0, left)
        pixels = pixels[0, :, top : top + crop_height, left : left + crop_width] / 255.0
        mean = torch.tensor(self.mean, device=pixels.device)[:, None, None]
        std = torch.tensor(self.std, device=pixels.device)[:, None, None]
        return (pixels - mean) / std


def device_preprocessing(transform: Callable) -> DevicePreprocessing | None:
    """The tensor version of ``transform`` when it is open_clip's standard eval transform, else None."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    kinds = [type(step).__name__ for step in steps]
    resize = next((s for s in steps if isinstance(s, T.Resize)), None)
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    normalize = next((s for s in steps if isinstance(s, T.Normalize)), None)
    known = {"Resize", "CenterCrop", "Normalize", "ToTensor", "MaybeToTensor", "MaybeConvertMode",
             "_convert_to_rgb", "function"}
    if resize is None or crop is None or normalize is None or not set(kinds) <= known:
        return None
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    modes = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}
    if size is None or resize.max_size is not None or resize.interpolation not in modes or not resize.antialias:
        return None
    crop_size = tuple(crop.size) if len(crop.size) == 2 else (crop.size[0], crop.size[0])
    return DevicePreprocessing(int(size), (int(crop_size[0]), int(crop_size[1])), modes[resize.interpolation],
                               tuple(float(m) for m in normalize.mean), tuple(float(s) for s in normalize.std))


@dataclass
class JpegBytes:
    """A JPEG read by a worker, to be decoded on the device: its bytes and EXIF orientation (1-8)."""

    data: torch.Tensor  # uint8 [n]
    orientation: int


def read_for_device(data: bytes, target_size: int | None, max_pixels: int, transform: Callable,
                    draft: bool) -> JpegBytes | torch.Tensor:
    """In a worker: a baseline RGB/greyscale JPEG within the limits -> ``JpegBytes`` (header parsed,
    not decoded); anything else -> decoded and preprocessed here with PIL, as the CPU path does."""
    if data[:3] == JPEG_MAGIC:
        try:
            with Image.open(io.BytesIO(data)) as header:
                check_size(*header.size, target_size, max_pixels)
                if header.mode in ("RGB", "L"):
                    orientation = int(header.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                    if 1 <= orientation <= 8:
                        return JpegBytes(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)
        except ImageReadError:
            raise
        except Exception:  # noqa: BLE001 - an unparsable header: let PIL's full decode name the problem
            pass
    return transform(decode_bytes(data, target_size, max_pixels, draft=draft))


def oriented(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to [C, H, W] as PIL's ``exif_transpose`` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, k=-1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(image, k=1, dims=(-2, -1))
    return image


def decode_on_device(
    jpegs: list[JpegBytes],
    device: torch.device,
    preprocess: DevicePreprocessing,
    fallback: Callable[[bytes], torch.Tensor],
) -> list[torch.Tensor | str]:
    """Decode ``jpegs`` in one batched call on ``device`` and preprocess them there; a JPEG the
    device decoder rejects goes through ``fallback`` (PIL on the CPU). Per JPEG: the pixels on
    ``device``, or the error text when the fallback fails too."""
    if not jpegs:
        return []
    try:
        decoded: list[torch.Tensor | None] = list(_decode_jpeg([j.data for j in jpegs], device))
    except RuntimeError:  # one bad file fails the batched call: decode one by one to find it
        decoded = []
        for jpeg in jpegs:
            try:
                decoded.append(_decode_jpeg(jpeg.data, device))
            except RuntimeError:
                decoded.append(None)
    results: list[torch.Tensor | str] = []
    for jpeg, image in zip(jpegs, decoded, strict=True):
        if image is not None:
            try:
                results.append(preprocess(oriented(image, jpeg.orientation)))
                continue
            except RuntimeError:
                pass
        try:
            results.append(fallback(bytes(jpeg.data.numpy())).to(device))
        except ImageReadError as error:
            results.append(str(error))
    return results


def _decode_jpeg(data, device: torch.device):
    """torchvision's decode_jpeg (one tensor or a batched list) to RGB uint8 on ``device``."""
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec; decode_jpeg still works
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def device_decoding_supported(device: torch.device) -> bool:
    """torchvision decodes JPEGs on CUDA (nvJPEG) and on the CPU; elsewhere (MPS) it cannot."""
    return device.type in ("cuda", "cpu")


__all__ = ["DevicePreprocessing", "JpegBytes", "decode_on_device", "device_preprocessing",
           "oriented", "read_for_device"]
