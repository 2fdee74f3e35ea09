"""Reading the text files users hand zsclip (labels, templates, manifests, descriptions).

UTF-8 only, with a leading byte-order mark dropped (Windows editors write one), bounded in size,
and a file in another encoding is refused in one line naming the file, the line and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

#: Text files larger than this are refused before they are read (a labels file is kilobytes).
MAX_TEXT_BYTES = 256 * 1024 * 1024


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The text of ``path`` (a ``what``, e.g. "labels file", for messages), BOM removed."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{what} {path} is {size} bytes, over the {max_bytes}-byte limit for text files")
        data = path.read_bytes()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file") from None
    except OSError as error:
        raise InputError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"{what} {path}, line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); save it as "
                         "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
