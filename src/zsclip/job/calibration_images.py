"""``--calibration-images``: what the user named (a folder, a glob, one file, or an embedding store) as the image
files that calibrate a graph runtime's int8 image tower (encoders/ptq.py), checked while options are parsed.

A store keeps embeddings, not pixels: static int8 needs the pixels, so a store serves only through the files it
was embedded from, where they are still at the paths it recorded (read now, content-hashed by the calibration,
so a file changed since is simply other calibration data). A store none of whose files is still there is
refused in one line. At most ``ptq.SELECT_MAX`` files are taken, evenly spaced over the sorted list.
"""

from __future__ import annotations

import os

from ..data.sources import expand_inputs, image_extensions
from ..data.urls import is_url
from ..encoders import ptq
from ..errors import InputError
from .sources import is_store


def calibration_images(spec: str) -> tuple[str, ...]:
    """The image files ``spec`` names (at most ``ptq.SELECT_MAX``), or a one-line InputError."""
    if is_store(spec):
        return _from_store(spec)
    images, errors = [], []
    for source in expand_inputs([spec]):
        if source.error is not None:
            errors.append(f"{source.name}: {source.error}")
        elif not is_url(source.name) and os.path.splitext(source.name)[1].lower() in image_extensions():
            images.append(source.name)
    if not images:
        why = errors[0] if errors else "no image files there"
        raise InputError(f"--calibration-images {spec}: {why}: give a folder or glob of images like the ones you "
                         "classify (or a store whose image files are still at their paths)")
    return tuple(ptq.select(images))


def _from_store(spec: str) -> tuple[str, ...]:
    from ..store import open_store

    keys: list[str] = []
    for batch in open_store(spec).batches():
        for key, path, error in zip(batch.keys or batch.paths, batch.paths, batch.errors, strict=True):
            if error is None and not is_url(key or path):
                keys.append(key or path)
    found = [path for path in ptq.select(keys) if os.path.isfile(path)]
    if not found:
        raise InputError(f"--calibration-images {spec}: a store keeps embeddings, not pixels, and none of the "
                         f"{len(keys)} image files it was embedded from is still at its path: give the folder of "
                         "images instead")
    return tuple(found)


__all__ = ["calibration_images"]
