"""Image decoding: orientation, every mode to RGB, draft decoding within the stated agreement, limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsclip.data.images import ImageReadError, decode_bytes, load_image, to_rgb


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    upright = load_image(path)
    assert upright.size == (20, 60)
    top_pixel = upright.getpixel((10, 2))
    assert top_pixel[2] > 200 and top_pixel[0] < 60  # the blue strip is now at the top


@pytest.mark.parametrize("mode, value", [("L", 100), ("LA", (100, 255)), ("P", 3), ("1", 1), ("CMYK", (0, 0, 0, 0)),
                                         ("I;16", 51400), ("I", 51400), ("RGBA", (10, 20, 30, 255))])
def test_every_mode_becomes_rgb(mode, value):
    rgb = to_rgb(Image.new(mode, (8, 8), value))
    assert rgb.mode == "RGB" and rgb.size == (8, 8)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    assert to_rgb(Image.new("I;16", (4, 4), 51400)).getpixel((0, 0)) == (200, 200, 200)


def test_transparency_is_composited_over_white():
    assert to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 255))).getpixel((0, 0)) == (0, 0, 0)


def test_draft_decoding_is_smaller_and_agrees_with_full_decoding(tmp_path, tiny_clip):
    paths = []
    for seed in range(4):
        path = tmp_path / f"photo{seed}.jpg"
        _photo(1600, 1200, seed).save(path, quality=90)
        paths.append(path)
    drafted = [load_image(p, target_size=224) for p in paths]
    full = [load_image(p) for p in paths]
    assert all(d.size == (800, 600) for d in drafted) and all(f.size == (1600, 1200) for f in full)
    # what the model sees after its own preprocessing (tiny model: 32 px input)
    small = [load_image(p, target_size=tiny_clip.image_size) for p in paths]
    assert small[0].size == (200, 150)
    a = tiny_clip.encode_images(torch.stack([tiny_clip.preprocess(i) for i in small]), precision="fp32")
    b = tiny_clip.encode_images(torch.stack([tiny_clip.preprocess(i) for i in full]), precision="fp32")
    assert (a * b).sum(dim=-1).min() >= 0.99


def test_small_images_and_non_jpeg_are_decoded_at_full_size(tmp_path):
    path = tmp_path / "small.jpg"
    _photo(300, 200).save(path)
    assert load_image(path, target_size=224).size == (300, 200)
    png = tmp_path / "big.png"
    _photo(1600, 1200).save(png)
    assert load_image(png, target_size=224).size == (1600, 1200)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (4000, 4000)).save(path)
    with pytest.raises(ImageReadError, match="16000000 pixels is over the limit of 1000000"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=20_000_000).size == (4000, 4000)


def test_decode_bytes_reports_empty_and_garbage():
    with pytest.raises(ImageReadError, match="empty"):
        decode_bytes(b"")
    with pytest.raises(ImageReadError, match="not an image"):
        decode_bytes(b"GIF89a but not really")
