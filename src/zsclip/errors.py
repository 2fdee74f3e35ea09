"""Errors zsclip raises on purpose: one line that names the input and the fix.

Entry points catch ``ZsclipError`` and print its message instead of a traceback; anything
else escaping is a bug.
"""

from __future__ import annotations


class ZsclipError(Exception):
    """Base class: the message is a complete, user-facing sentence."""


class InputError(ZsclipError, ValueError):
    """Bad user input: class names, templates, arguments, files."""


class ImageReadError(InputError):
    """One image could not be read; the message is the reason (the caller names the path)."""


class ModelLoadError(ZsclipError, RuntimeError):
    """A model or its weights could not be loaded (unknown name, no network, bad files)."""


class ClassifierFileError(ZsclipError, ValueError):
    """A classifier file is missing, corrupt, or was built for another model."""


class OutputError(ZsclipError, OSError):
    """An output file could not be written (missing folder, no permission, full disk, name too long)."""


class ZsclipWarning(UserWarning):
    """Something was adjusted to keep going (e.g. a prompt truncated to the text context)."""
