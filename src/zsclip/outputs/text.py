"""Making text safe to show: what reaches a terminal or a CSV cell is one line of printable text.

File names, labels and error messages come from users, file systems and image libraries; a
name may hold an escape sequence that recolours a terminal, a newline that forges a log line,
bytes that are not UTF-8 (Linux file names), or start with ``=`` and run as a spreadsheet formula.
"""

from __future__ import annotations

import os
import re
import sys

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def undecodable_escaped(text: str) -> str:
    """A name with bytes that are not valid UTF-8 (decoded by Python as surrogates), shown with
    those bytes as ``\\xNN``: ``caf\\xe9.jpg``. Other text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace") if sys.platform != "win32" else \
            text.encode("utf-8", "backslashreplace").decode("utf-8")


def utf8_safe(value: object) -> object:
    """``value`` (str, or dicts and lists of them) with every string passed through
    ``undecodable_escaped``: what a UTF-8 file (JSON, HTML) can hold."""
    if isinstance(value, str):
        return undecodable_escaped(value)
    if isinstance(value, dict):
        return {utf8_safe(key): utf8_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [utf8_safe(item) for item in value]
    return value


def printable(text: object) -> str:
    """One line, no control characters: newlines, tabs and escapes shown as ``\\n``, ``\\x1b``..."""
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case, decided in C: nothing to escape or decode
        return text
    return _CONTROL.sub(_escape, undecodable_escaped(text))


def csv_cell(text: object) -> str:
    """A printable cell that a spreadsheet shows as text, never runs as a formula (prefix ``'``)."""
    cell = printable(text)
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _escape(match: re.Match) -> str:
    character = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(character, f"\\x{ord(character):02x}" if ord(character) < 256
                                                        else f"\\u{ord(character):04x}")
