"""The one way zsclip writes a file: into a unique temporary file beside the target, then renamed.

A reader never sees half a file, a crash leaves the previous file intact, two runs writing the
same target never share a temporary name (the last rename wins with a whole file), and the
temporary file is created fresh (O_EXCL), so a symlink planted at a predictable name is never
written through. The finished file gets the mode the user's umask gives a new file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import OutputError
from .text import printable


def _umask_mode() -> int:
    """0o666 less the process umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)  # portable fallback: read by setting, then restore at once
    os.umask(current)
    return 0o666 & ~current


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``target``; on success it replaces ``target``.

    For writers that insist on a path (safetensors, pyarrow, matplotlib). On any error the
    temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:80]}.", suffix=".partial")
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, _umask_mode())
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror or error}; the previous file, if any, "
                          "is unchanged") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


class AtomicFile:
    """A text or binary file written under a temporary name and renamed into place by ``commit``.

    ``abandon`` keeps what was written under a name that says it is incomplete
    (``NAME.partial`` if free, else the unique temporary name) and returns that path.
    """

    def __init__(self, target: str | os.PathLike, mode: str = "w", **open_kwargs) -> None:
        self.target = Path(target)
        try:
            handle, temporary = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name[:80]}.",
                                                 suffix=".partial")
        except OSError as error:
            raise OutputError(f"cannot write {self.target}: {error.strerror or error}") from None
        self.temporary = Path(temporary)
        self.file: IO = os.fdopen(handle, mode, **open_kwargs)

    def commit(self) -> Path:
        """Flush, close and rename into place."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.temporary, _umask_mode())
            os.replace(self.temporary, self.target)
        except OSError as error:
            self.discard()
            raise OutputError(f"cannot write {self.target}: {error.strerror or error}; the previous file, if "
                              "any, is unchanged") from None
        return self.target

    def abandon(self) -> Path:
        """Close without replacing the target; keep the rows so far and say where."""
        with contextlib.suppress(OSError):
            self.file.close()
        partial = self.target.with_name(self.target.name + ".partial")
        with contextlib.suppress(OSError):  # a file the user keeps: the mode a new file gets, as commit gives
            os.chmod(self.temporary, _umask_mode())
        try:
            if not os.path.lexists(partial):
                os.rename(self.temporary, partial)
                return partial
        except OSError:
            pass
        return self.temporary

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def check_writable(target: str | os.PathLike, what: str = "output") -> Path:
    """Check, before a long run starts, that ``target`` can be written; return it as a Path.

    The check does what the final write will do (create a temporary file beside the target, then
    remove it), so a missing folder, no permission, a read-only disk or a name too long for the
    file system is reported in one line now rather than after an hour of work.
    """
    target = Path(target).expanduser()
    shown = printable(target)
    folder = target.parent
    try:
        limit = os.pathconf(folder if folder.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    length = len(os.fsencode(target.name))
    if length > limit:
        raise OutputError(f"{what} {printable(target.name[:40])}...: the name is {length} bytes, over this file "
                          f"system's limit of {limit}; choose a shorter name")
    try:
        if target.is_dir():
            raise OutputError(f"{what} {shown} is a folder: give a file name inside it")
        if not folder.is_dir():
            raise OutputError(f"{what} {shown}: folder {printable(folder)} does not exist; create it first")
    except OSError as error:
        if isinstance(error, OutputError):
            raise
        raise OutputError(f"{what} {shown} cannot be written: {error.strerror or error}") from None
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name[:80]}.", suffix=".partial")
    except OSError as error:
        raise OutputError(f"{what} {shown} cannot be written: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(probe)
    return target


def write_atomically(target: str | os.PathLike, content: str | bytes | Callable[[IO], None]) -> Path:
    """Write ``content`` (text, bytes, or a function that writes to the open file) to ``target`` atomically."""
    binary = isinstance(content, bytes)
    kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
    output = AtomicFile(target, "wb" if binary else "w", **kwargs)
    try:
        if callable(content):
            content(output.file)
        else:
            output.file.write(content)
    except BaseException:
        output.discard()
        raise
    return output.commit()


__all__ = ["AtomicFile", "atomic_path", "check_writable", "write_atomically"]
