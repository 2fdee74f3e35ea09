"""http(s) downloads of images: the only code in zsclip that opens a network connection.

A URL is fetched only when the user named it as an input (never one a server's client names);
every download is bounded in bytes and time.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from ..errors import ImageReadError

#: Default cap on a downloaded image's size, and the download timeout.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
URL_TIMEOUT_S = 15.0
URL_SCHEMES = ("http://", "https://")


def is_url(name: str) -> bool:
    """True for the http(s) URLs zsclip downloads; anything else is a path."""
    return name.startswith(URL_SCHEMES)


def fetch_url(url: str, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = URL_TIMEOUT_S) -> bytes:
    """Download ``url`` with a timeout, refusing bodies over ``max_bytes``."""
    request = urllib.request.Request(url, headers={"User-Agent": "zsclip"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageReadError(f"download is {int(declared)} bytes, over the {max_bytes}-byte limit")
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        raise ImageReadError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise ImageReadError(f"unreachable URL: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise ImageReadError(f"download failed: {error}") from None
    if len(data) > max_bytes:
        raise ImageReadError(f"download exceeds the {max_bytes}-byte limit")
    return data
