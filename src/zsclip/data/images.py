"""Decode image files and URLs into upright RGB PIL images, robustly.

Every failure becomes an ``ImageReadError`` with a short reason a person understands (missing,
empty, not an image, truncated, too many pixels, unreachable URL), so callers can report the
item and move on. Large JPEGs decode at a reduced scale (draft mode) when the model only needs
a small image: the same picture at a fraction of the decode time.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError
from .urls import MAX_DOWNLOAD_BYTES, URL_TIMEOUT_S, fetch_url, is_url

#: Default pixel cap (width x height): PIL's own decompression-bomb threshold, about 89 megapixels.
#: It bounds the image as stored and as resized for the model; a decoded image takes at most
#: 4 bytes a pixel (RGBA), so one image costs at most ~360 MB at the default cap.
MAX_PIXELS = 89_478_485
#: The longest side may be at most this many times the shortest (a 1 x 200,000 strip is refused).
MAX_ASPECT = 50



def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB copy of ``image``: EXIF rotation applied, transparency composited over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit / float greyscale: scale to 8 bits instead of clipping everything to white
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def load_image(
    source: str | os.PathLike,
    target_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_download_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout: float = URL_TIMEOUT_S,
    *,
    draft: bool = True,
) -> Image.Image:
    """Open ``source`` (a path or an http(s) URL) as an upright RGB image.

    ``target_size``: the short side the model resizes images to. With ``draft``, JPEGs larger
    than twice that decode at a reduced scale that still leaves at least twice the target on the
    short side. ``max_pixels`` bounds the image as stored and as the model would resize it, and
    aspect ratios beyond 1:``MAX_ASPECT`` are refused. Raises ImageReadError.
    """
    source = os.fspath(source)
    if is_url(source):
        return decode_bytes(fetch_url(source, max_download_bytes, timeout), target_size, max_pixels, draft=draft)
    with file_errors():
        if os.path.getsize(source) == 0:
            raise ImageReadError("empty file")
        with open(source, "rb") as handle:
            return _decode(handle, target_size, max_pixels, draft)


def read_image_bytes(source: str | os.PathLike, max_bytes: int = MAX_DOWNLOAD_BYTES * 5,
                     timeout: float = URL_TIMEOUT_S) -> bytes:
    """The raw bytes of an image file or URL, undecoded (for decoders elsewhere, e.g. on a GPU),
    with the same refusals as ``load_image``: empty files, FIFOs, folders, files over ``max_bytes``."""
    source = os.fspath(source)
    if is_url(source):
        return fetch_url(source, min(max_bytes, MAX_DOWNLOAD_BYTES), timeout)
    with file_errors():
        size = os.path.getsize(source)
        if size == 0:
            raise ImageReadError("empty file")
        if size > max_bytes:
            raise ImageReadError(f"file is {size} bytes, over the {max_bytes}-byte limit for one image")
        with open(source, "rb") as handle:
            # read what the file holds (+1 to notice growth), never a max_bytes buffer: read(n)
            # allocates n bytes up front, 250 MB per call under a memory limit
            data = handle.read(size + 1)
        if len(data) > max_bytes:
            raise ImageReadError(f"file grew past the {max_bytes}-byte limit for one image while it was read")
        return data


@contextlib.contextmanager
def file_errors(kind: str = "an image file") -> Iterator[None]:
    """What opening or reading a media file can fail with, as one ImageReadError line each (``kind``
    names what the file should have been: "an image file", "a video file")."""
    try:
        yield
    except FileNotFoundError:
        raise ImageReadError("no such file (or a broken link)") from None
    except IsADirectoryError:
        raise ImageReadError(f"is a directory, not {kind}") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except OSError as error:
        raise ImageReadError(f"cannot read file: {error.strerror or error}") from None


def decode_bytes(data: bytes, target_size: int | None = None, max_pixels: int = MAX_PIXELS, *,
                 draft: bool = True) -> Image.Image:
    """Decode an in-memory image file (downloads, archive members, uploads)."""
    if not data:
        raise ImageReadError("empty file")
    return _decode(io.BytesIO(data), target_size, max_pixels, draft)


def check_size(width: int, height: int, target_size: int | None, max_pixels: int) -> None:
    """Refuse an image whose pixels, aspect ratio, or size once resized for the model are over the limits."""
    if width < 1 or height < 1:
        raise ImageReadError(f"{width}x{height}: an image needs at least one pixel")
    if width * height > max_pixels:
        raise ImageReadError(f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
                             "(possible decompression bomb; raise --max-pixels to allow it)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageReadError(f"{width}x{height}: aspect ratio beyond 1:{MAX_ASPECT}; a model resizing its short "
                             "side would blow it up (crop the image first)")
    if target_size:
        scale = target_size / min(width, height)
        resized = math.ceil(width * scale) * math.ceil(height * scale)
        if resized > max_pixels:
            raise ImageReadError(f"{width}x{height} resized for the model is {resized} pixels, over the limit of "
                                 f"{max_pixels}")


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL refuses images over 2x its own MAX_IMAGE_PIXELS before we see their size; zsclip's
    ``max_pixels`` is the one limit (checked right after the header is read), so PIL's is lifted
    while zsclip opens an image."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """What PIL raises on a file it cannot decode, as one ImageReadError line each."""
    try:
        yield
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image, or a format PIL cannot read") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"over the pixel limit (possible decompression bomb): {error}") from None
    except MemoryError:
        raise ImageReadError("not enough memory to decode this image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError,
            ZeroDivisionError) as error:  # what PIL's format plugins raise on damaged files
        raise ImageReadError(f"truncated or corrupt image: {error}") from None


def _decode(handle, target_size: int | None, max_pixels: int, draft: bool = True) -> Image.Image:
    with _decode_errors(), _own_pixel_limit(), Image.open(handle) as image:
        width, height = image.size
        check_size(width, height, target_size, max_pixels)
        if draft and target_size and image.format == "JPEG":
            scale = 2 * target_size / min(width, height)
            if scale < 1:
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        return to_rgb(image)


def probe_image(source: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse what ``load_image`` refuses from a file's header alone (missing, empty, not an image, over
    the pixel or aspect-ratio limits) without decoding it: a query image checked before a model loads.
    A URL is left for ``load_image`` (it is fetched once, when decoded)."""
    source = os.fspath(source)
    if is_url(source):
        return
    with file_errors():
        if os.path.getsize(source) == 0:
            raise ImageReadError("empty file")
        with open(source, "rb") as handle, _decode_errors(), _own_pixel_limit(), Image.open(handle) as image:
            check_size(*image.size, None, max_pixels)
