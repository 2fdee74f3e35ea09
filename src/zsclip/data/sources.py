"""Expand what the user typed (files, folders, globs, URLs, '-' for stdin) into image sources.

Expansion never fails on a bad item: a path that does not exist, a pattern that matches nothing
or a folder that cannot be read becomes a source carrying its error, so it is reported in the
output like any other failure and the run goes on. Folders and ``**`` patterns are walked without
following symbolic links to folders (a link loop cannot make a run endless), and a file named
twice (directly, by a glob, through a link) is one source.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TextIO

from .urls import is_url

_GLOB_CHARS = set("*?[")


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Every file extension the installed Pillow can open (AVIF/HEIC too when their plugins are there)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


#: The extensions zsclip looks for in folders and patterns (computed from Pillow on first use).
IMAGE_EXTENSIONS = image_extensions()


@lru_cache(maxsize=1)
def media_extensions() -> frozenset[str]:
    """What folders and patterns pick up: image extensions and video extensions (data/video.py)."""
    from .video import VIDEO_EXTENSIONS

    return image_extensions() | VIDEO_EXTENSIONS


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


def unique_sources(sources: Iterable[Source]) -> tuple[list[Source], list[tuple[Source, Source]]]:
    """(sources with each local file once, [(dropped duplicate, the source kept for it)]).

    Files are the same when they resolve to the same path (links included); URLs and sources
    carrying an error are kept as they are."""
    kept: list[Source] = []
    dropped: list[tuple[Source, Source]] = []
    first: dict[str, Source] = {}
    for source in sources:
        if source.error is None and not is_url(source.name):
            try:
                key = os.path.realpath(source.name)
            except (OSError, ValueError):
                key = source.name
            if key in first:
                dropped.append((source, first[key]))
                continue
            first[key] = source
        kept.append(source)
    return kept, dropped


def _expand_one(item: str) -> Iterator[Source]:
    if is_url(item):
        yield Source(item)
        return
    if "\x00" in item:
        yield Source(item.replace("\x00", "\\x00"), "a path cannot contain a NUL character")
        return
    path = Path(item).expanduser()
    try:
        if path.is_dir():
            yield from images_under(path)
            return
        if path.exists() or path.is_symlink():
            yield Source(str(path))
            return
    except OSError as error:  # e.g. a name too long for the file system
        yield Source(item, f"cannot read: {error.strerror or error}")
        return
    if _GLOB_CHARS & set(item):
        matches = list(_glob(os.path.expanduser(item)))
        if not matches:
            yield Source(item, "no image files match this pattern")
        yield from matches
    else:
        yield Source(item, "no such file or directory")


def images_under(folder: Path) -> Iterator[Source]:
    """Image and video files below ``folder``, sorted, hidden entries skipped; an unreadable sub-folder
    is an error source, and symbolic links to folders are not followed (loops cannot recur)."""
    extensions = media_extensions()
    failures: list[OSError] = []
    for root, dirs, files in os.walk(folder, followlinks=False, onerror=failures.append):
        while failures:
            error = failures.pop(0)
            yield Source(error.filename or root, f"cannot read folder: {error.strerror or error}")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                yield Source(os.path.join(root, name))
    for error in failures:
        yield Source(error.filename or str(folder), f"cannot read folder: {error.strerror or error}")


def _glob(pattern: str) -> Iterator[Source]:
    """Image files matching ``pattern``, sorted; ``**`` matches any depth of folders. Walked with
    os.walk (no links to folders followed) from the deepest folder the pattern fixes."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    root = os.sep.join(fixed) if fixed else "."
    if pattern.startswith(os.sep) and not fixed[1:]:
        root = os.sep
    rest = parts[len(fixed):]
    matcher = _pattern_regex(tuple(rest))
    extensions = media_extensions()
    prefix = "" if root == "." and not pattern.startswith("./") else root.rstrip(os.sep) + os.sep
    found = []
    failures: list[OSError] = []
    if not os.path.isdir(root):
        return
    max_depth = None if "**" in rest else len(rest) - 1  # without **, no need to walk deeper than the pattern
    for current, dirs, files in os.walk(root, followlinks=False, onerror=failures.append):
        relative = os.path.relpath(current, root)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        dirs[:] = [] if max_depth is not None and depth >= max_depth else sorted(
            d for d in dirs if not d.startswith("."))
        for name in files:
            candidate = name if relative == "." else os.path.join(relative, name)
            if os.path.splitext(name)[1].lower() in extensions and matcher.fullmatch(candidate):
                found.append(prefix + candidate if prefix else candidate)
    yield from (Source(path) for path in sorted(found))
    for error in failures:
        yield Source(error.filename or root, f"cannot read folder: {error.strerror or error}")


@lru_cache(maxsize=64)
def _pattern_regex(parts: tuple[str, ...]) -> re.Pattern:
    """A regex over relative paths for glob components; ``**`` = zero or more folders."""
    separator = re.escape(os.sep)
    pieces = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            pieces.append(".*" if last else f"(?:[^{separator}]+{separator})*")
        else:
            pieces.append(_component_regex(part, separator) + ("" if last else separator))
    return re.compile("".join(pieces), re.DOTALL)


def _component_regex(part: str, separator: str) -> str:
    """One glob component: * and ? never cross a folder, [abc] / [!abc] are character classes."""
    out, i = [], 0
    while i < len(part):
        character = part[i]
        if character == "*":
            out.append(f"[^{separator}]*")
        elif character == "?":
            out.append(f"[^{separator}]")
        elif character == "[" and "]" in part[i + 2 :] or character == "[" and part[i + 1 : i + 2] == "]":
            end = part.index("]", i + 2) if part[i + 1 : i + 2] in ("!", "]") else part.index("]", i + 1)
            inside = part[i + 1 : end]
            negate = inside.startswith("!")
            inside = inside[1:] if negate else inside
            out.append("[" + ("^" if negate else "") + inside.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = end
        else:
            out.append(re.escape(character))
        i += 1
    return "".join(out)
