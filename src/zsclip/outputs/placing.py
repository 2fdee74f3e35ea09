"""Putting a user's image files into an output folder: by copy or hard link, never moving the original,
never overwriting a file that is there (a name clash gets a suffix: ``cat.jpg``, ``cat_1.jpg``, ...).

Every placement is atomic: a copy is written under a temporary name and linked to its final name with
``os.link``, which fails instead of replacing an existing file, so a kill leaves either no file or the
whole file under its final name (never a half-written image that looks finished). ``adopt`` lets a resumed
run recognise a file it placed before it was killed (same inode, or same size and bytes), so an image is
placed once.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError, OutputError
from .text import printable

#: How files are placed: ``copy`` (independent files) or ``hardlink`` (no extra space; the same file twice,
#: a copy where the file system cannot link, e.g. across disks).
PLACE_MODES = ("copy", "hardlink")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """A single path component from a class or file name: no separators, control characters or
    leading dots (``../x`` cannot leave the folder), at most 200 bytes."""
    cleaned = _UNSAFE.sub("_", name).strip().lstrip(".") or fallback
    while len(os.fsencode(cleaned)) > 200:
        cleaned = cleaned[:-1]
    return cleaned


class Placer:
    """Places local files into folders under unique names (see module docstring)."""

    def __init__(self, mode: str = "copy") -> None:
        if mode not in PLACE_MODES:
            raise InputError(f"--files {mode!r}: use {' or '.join(PLACE_MODES)}")
        self.mode = mode
        #: stems given out per folder in this run (FiftyOne ids are file stems: ``a.jpg`` and ``a.png`` clash)
        self._stems: dict[Path, set[str]] = {}

    def place(self, source: str | os.PathLike, folder: Path, name: str | None = None, *,
              unique_stem: bool = False, adopt: bool = False, claimed: set[Path] | frozenset = frozenset()) -> Path:
        """``source`` placed in ``folder`` as ``name`` (default: its own name) or the first free
        ``stem_N.ext``; with ``adopt``, an existing candidate holding the same file (and not ``claimed`` by
        another input) is returned as is: the copy a killed run made before it could record it."""
        source = Path(source)
        if not source.is_file():
            raise InputError(f"{printable(source)} is not a local file: it cannot be placed in a folder")
        folder.mkdir(parents=True, exist_ok=True)
        name = safe_name(name or source.name)
        stem, suffix = _split(name)
        taken = self._stems.setdefault(folder, set())
        for index in range(100_000):
            candidate_stem = stem if index == 0 else f"{stem}_{index}"
            if unique_stem and candidate_stem in taken:
                continue
            candidate = folder / f"{candidate_stem}{suffix}"
            if os.path.lexists(candidate):
                if adopt and candidate not in claimed and _same_file(source, candidate):
                    taken.add(candidate_stem)
                    return candidate
                continue
            if self._link(source, candidate):
                taken.add(candidate_stem)
                return candidate
        raise OutputError(f"{printable(folder)}: no free name for {printable(name)}")

    def _link(self, source: Path, target: Path) -> bool:
        """Create ``target`` from ``source`` without replacing anything; False when the name is taken."""
        if self.mode == "hardlink":
            try:
                os.link(source, target)
                return True
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise OutputError(f"cannot link {printable(source)} into {printable(target.parent)}: "
                                      f"{error.strerror or error}") from None
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".zsclip-", suffix=".partial")
        os.close(handle)
        try:
            shutil.copyfile(source, temporary)
            shutil.copymode(source, temporary)
            os.link(temporary, target)  # atomic, and never replaces a file that appeared meanwhile
            return True
        except FileExistsError:
            return False
        except OSError as error:
            raise OutputError(f"cannot copy {printable(source)} into {printable(target.parent)}: "
                              f"{error.strerror or error}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _split(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if stem else (name, "")


def _same_file(source: Path, candidate: Path) -> bool:
    try:
        if os.path.samefile(source, candidate):
            return True
        return candidate.stat().st_size == source.stat().st_size and filecmp.cmp(source, candidate, shallow=False)
    except OSError:
        return False


def remove_partials(folder: Path) -> None:
    """Temporary copies a killed run left in ``folder`` (never a finished file)."""
    for leftover in folder.glob(".zsclip-*.partial"):
        with contextlib.suppress(OSError):
            leftover.unlink()


__all__ = ["PLACE_MODES", "Placer", "safe_name", "remove_partials"]
