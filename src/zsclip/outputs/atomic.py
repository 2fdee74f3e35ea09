"""The one way zsclip writes a file: into a unique temporary file beside the target, then renamed.

A reader never sees half a file, a crash leaves the previous file intact, two runs writing the
same target never share a temporary name (the last rename wins with a whole file), and the
temporary file is created fresh (O_EXCL), so a symlink planted at a predictable name is never
written through. The finished file gets the mode the user's umask gives a new file.

``durable=True`` (the embedding store's shards and manifest) also survives power loss: the file's
bytes are synced before the rename, and the folder after it (a rename lives in the folder's entry,
which ``fsync`` of the file does not write), so once the call returns the new file is on disk under
its name. The store relies on that order: shard synced -> folder synced -> manifest renamed -> folder
synced, so a manifest on disk never lists a shard the disk lost.
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


def fsync_folder(folder: str | os.PathLike) -> None:
    """Sync a folder's entries (the renames and creations in it) to disk. A file system that cannot
    sync a folder (some network and FUSE mounts refuse ``fsync`` on a directory) is left as it is:
    the file's own data was synced, which is all such a file system offers."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fsync_file(path: str | os.PathLike) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``target``; on success it replaces ``target``.

    For writers that insist on a path (safetensors, pyarrow, matplotlib). On any error the
    temporary file is removed and ``target`` is left as it was. ``durable``: the file is synced
    before the rename and its folder after (see the module docstring).
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
        if durable:
            _fsync_file(temporary)
        os.replace(temporary, target)
        if durable:
            fsync_folder(target.parent)
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

    def __init__(self, target: str | os.PathLike, mode: str = "w", durable: bool = False, **open_kwargs) -> None:
        self.target = Path(target)
        self.durable = durable
        try:
            handle, temporary = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name[:80]}.",
                                                 suffix=".partial")
        except OSError as error:
            raise OutputError(f"cannot write {self.target}: {error.strerror or error}") from None
        self.temporary = Path(temporary)
        self.file: IO = os.fdopen(handle, mode, **open_kwargs)

    def commit(self) -> Path:
        """Flush, sync, close and rename into place (``durable``: the folder is synced before the
        rename, so files renamed into it earlier are on disk before this one names them, and after)."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.temporary, _umask_mode())
            if self.durable:
                fsync_folder(self.target.parent)
            os.replace(self.temporary, self.target)
            if self.durable:
                fsync_folder(self.target.parent)
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


def write_atomically(target: str | os.PathLike, content: str | bytes | Callable[[IO], None],
                     durable: bool = False) -> Path:
    """Write ``content`` (text, bytes, or a function that writes to the open file) to ``target`` atomically
    (``durable``: and its folder synced before and after the rename, see the module docstring)."""
    binary = isinstance(content, bytes)
    kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
    output = AtomicFile(target, "wb" if binary else "w", durable=durable, **kwargs)
    try:
        if callable(content):
            content(output.file)
        else:
            output.file.write(content)
    except BaseException:
        output.discard()
        raise
    return output.commit()


__all__ = ["AtomicFile", "atomic_path", "check_writable", "fsync_folder", "write_atomically"]
