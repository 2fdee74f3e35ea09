"""Is the model hub reachable? Asked once, in a few seconds at most, before a model that may download loads.

Without network, huggingface_hub retries every request five times with back-off (about 55 s, logging two
lines per try) before open_clip or transformers fail, although a name that does not resolve or a port that
refuses is known at the first try. So before such a load the hub's host (``HF_ENDPOINT``, default
huggingface.co) is resolved and connected to once; when that fails, the process switches huggingface_hub to
offline mode (``HF_HUB_OFFLINE``): weights already in the local cache still load, and missing ones fail at
once, in one line that says why and what to do. With a proxy configured the probe is skipped (the proxy,
not this machine, reaches the hub), as it is when offline mode is already set.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
_TRUE = ("1", "ON", "YES", "TRUE")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    return any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def unreachable(url: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub at ``url`` (default: ``endpoint()``) cannot be reached from here, or None when a TCP
    connection to it opens (or a proxy is configured, or the URL names no host: nothing to tell)."""
    url = url or endpoint()
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        return f"{host} cannot be resolved ({getattr(error, 'strerror', None) or error}): no network or no DNS"
    problem = None
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.settimeout(timeout_s)
                probe.connect(address)
            return None
        except TimeoutError:
            problem = f"{host}:{port} did not answer within {timeout_s:g} s"
        except OSError as error:
            problem = f"{host}:{port}: {error.strerror or error}"
    return problem


def go_offline() -> None:
    """huggingface_hub's offline mode for the rest of this process (and the processes it starts)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: it read the variable at import
        constants.HF_HUB_OFFLINE = True


def check_before_download() -> str | None:
    """When the hub cannot be reached: switch to offline mode and return why (for the error line, should the
    weights not be cached); else None. Call only for a model that may download."""
    if offline_mode():
        return None
    reason = unreachable()
    if reason is not None:
        go_offline()
    return reason


_OFFLINE_SIGNS = ("local cache", "disk cache", "cached files", "offline mode", "couldn't connect", "outgoing traffic")


def looks_offline(error: BaseException | None) -> bool:
    """Whether a load failed for want of the hub (a file neither cached nor fetchable), by the error or its causes,
    not for another reason (a damaged cached file is its own message)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") \
                or any(sign in str(error).lower() for sign in _OFFLINE_SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def offline_failure(what: str, reason: str) -> str:
    """The one line for a model whose weights are not cached while the hub cannot be reached."""
    return (f"could not load {what}: its weights are not in the local cache and the model hub ({endpoint()}) "
            f"cannot be reached: {reason}. Without network: use the bundled model (--model demo), or a local "
            "copy: local-dir:PATH (open_clip_config.json + weights), --pretrained /path/to/weights.safetensors, "
            "transformers:/path/to/save_pretrained_dir")


__all__ = ["endpoint", "unreachable", "go_offline", "check_before_download", "looks_offline", "offline_failure",
           "offline_mode"]
