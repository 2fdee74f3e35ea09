"""http(s) downloads of images: the only code in zsclip that opens a network connection.

A URL is fetched only when the user named it as an input (a server never fetches one its client
names). Every download is bounded in total: bytes (``max_bytes``) and wall time (``timeout``, the
whole download, not each read, so a server that drips a byte a second is cut off), and it
follows at most ``MAX_REDIRECTS`` redirects, to http(s) only (never file:, ftp: or data:).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from urllib.parse import urlsplit

from ..errors import ImageReadError

#: Default cap on a downloaded image's size, and the default deadline for a whole download.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
URL_TIMEOUT_S = 30.0
MAX_REDIRECTS = 5
URL_SCHEMES = ("http://", "https://")
_CHUNK = 64 * 1024


def is_url(name: str) -> bool:
    """True for the http(s) URLs zsclip downloads; anything else is a path."""
    return name[:8].lower().startswith(URL_SCHEMES)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most MAX_REDIRECTS redirects, and only to http(s) URLs (with ``origin``: only on that host)."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, origin: str | None = None) -> None:
        self.origin = _origin(origin) if origin else None

    def redirect_request(self, request, fp, code, message, headers, new_url):
        if urlsplit(new_url).scheme.lower() not in ("http", "https"):
            raise ImageReadError(f"redirected to {urlsplit(new_url).scheme or 'a relative'}: URL; only http(s) "
                                 "redirects are followed")
        if self.origin is not None and _origin(urllib.parse.urljoin(request.full_url, new_url)) != self.origin:
            raise ImageReadError("redirected to another host: not followed (its credentials stay on their host)")
        return super().redirect_request(request, fp, code, message, headers, new_url)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _opener(origin: str | None = None) -> urllib.request.OpenerDirector:
    """An opener that speaks http(s) only: no file:, ftp: or data: handlers at all."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(origin),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def fetch_url(url: str, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = URL_TIMEOUT_S,
              headers: dict[str, str] | None = None, origin: str | None = None) -> bytes:
    """Download ``url`` within ``timeout`` seconds in total, refusing bodies over ``max_bytes``. ``headers``
    (credentials) go with it; with ``origin``, the URL and every redirect must stay on that scheme and host."""
    if not is_url(url):
        raise ImageReadError("not an http(s) URL")
    if origin is not None and _origin(url) != _origin(origin):
        raise ImageReadError("not on the host this download is limited to")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "zsclip", **(headers or {})})
    try:
        with _opener(origin).open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageReadError(f"download is {int(declared)} bytes, over the {max_bytes}-byte limit")
            chunks, size = [], 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ImageReadError(f"download took longer than {timeout:g} s (the whole-download limit)")
                _set_read_timeout(response, remaining)
                chunk = response.read1(_CHUNK) if hasattr(response, "read1") else response.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ImageReadError(f"download exceeds the {max_bytes}-byte limit")
                chunks.append(chunk)
    except ImageReadError:
        raise
    except urllib.error.HTTPError as error:
        if 300 <= error.code < 400:  # urllib refuses non-http(s) targets and long chains before our handler
            raise ImageReadError(f"redirect not followed (HTTP {error.code}: {error.msg}); zsclip follows at most "
                                 f"{MAX_REDIRECTS} redirects, to http(s) URLs only") from None
        raise ImageReadError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise ImageReadError(f"download took longer than {timeout:g} s (the whole-download limit)") from None
        raise ImageReadError(f"unreachable URL: {reason}") from None
    except TimeoutError:
        raise ImageReadError(f"download took longer than {timeout:g} s (the whole-download limit)") from None
    except (OSError, ValueError) as error:
        raise ImageReadError(f"download failed: {error}") from None
    return b"".join(chunks)


def _set_read_timeout(response, seconds: float) -> None:
    """Shrink the socket's per-read timeout to what is left of the whole-download deadline."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))
