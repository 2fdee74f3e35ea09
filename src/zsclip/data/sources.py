"""Expand what the user typed (files, folders, globs, URLs, '-' for stdin) into image sources.

Expansion never fails on a bad item: a path that does not exist becomes a source carrying its
error, so it is reported in the output like any other failure and the run goes on.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .urls import is_url

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"})
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One image to classify: a local path or an http(s) URL, or why it cannot be one."""

    name: str
    error: str | None = None


def expand_inputs(inputs: Iterable[str], stdin: TextIO | None = None) -> Iterator[Source]:
    """Sources in the order given: folders recursively (sorted, image extensions only), globs
    (``**`` allowed), URLs as they are, ``-`` = one path or URL per line on stdin."""
    for item in inputs:
        if item == "-":
            for line in stdin or sys.stdin:
                if line.strip():
                    yield from _expand_one(line.strip())
        else:
            yield from _expand_one(item)


def _expand_one(item: str) -> Iterator[Source]:
    if is_url(item):
        yield Source(item)
        return
    path = Path(item).expanduser()
    if path.is_dir():
        yield from (Source(str(p)) for p in _images_under(path))
    elif path.exists():
        yield Source(str(path))
    elif _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
        files = [m for m in matches if os.path.isfile(m) and Path(m).suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            yield Source(item, "no image files match this pattern")
        yield from (Source(m) for m in files)
    else:
        yield Source(item, "no such file or directory")


def _images_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files)
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return found
