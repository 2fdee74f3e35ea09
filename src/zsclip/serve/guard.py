"""One ASGI middleware that checks the API key, bounds every HTTP request in bytes and time, and counts it.

- Framing: a request with both Content-Length and Transfer-Encoding is refused (400) before anything else,
  and the connection closed (RFC 9112 6.1): behind a proxy that frames it by the other header, the rest of
  its body would be read here as a second request (request smuggling).
- API key: with a key set, a request to a protected route without it gets 401 from its headers,
  before a byte of its body is read (and the connection is closed when it announced a body, so the
  body is not read afterwards either). Open: /healthz, /readyz, the page, its static files, /docs.
- Body size: a declared Content-Length over the limit is refused (413) before a byte is read; a
  body without one (chunked) is counted as it streams and refused when it passes the limit.
- Time: the whole request, upload included, gets ``timeout_s``; past it the handler is cancelled
  (queued images are dropped from the batching queue) and the client gets 503 with Retry-After.
- Metrics: requests by route template, method and status, and their latency; every label takes its
  values from a fixed set (an unknown method is "other", a path that no route matches is "other").

Written as plain ASGI (not ``BaseHTTPMiddleware``) so it wraps the body stream itself and adds no
task per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ServeMetrics

log = logging.getLogger("zsclip.serve")


#: method label values; any other method a client sends is counted as "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: status label values kept as they are (the ones the service documents); others become "2xx", "3xx", ...
STATUSES = frozenset({200, 304, 400, 401, 404, 405, 408, 413, 422, 429, 500, 503})
#: routes that need no API key: probes, the page and its files, the API docs
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/openapi.json", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/docs-assets/")
AMBIGUOUS_LENGTH = ("the request has both Content-Length and Transfer-Encoding, so its length is ambiguous "
                    "(RFC 9112 6.1): send one of them")
UNAUTHORIZED = ("missing or wrong API key: send it in the X-API-Key header (or Authorization: Bearer KEY; a Label "
                "Studio model connection: as the basic-auth password)")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes: send fewer or smaller images")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON error response in the app's format."""
    body = json.dumps({"error": message, "status": status}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return ({"type": "http.response.start", "status": status, "headers": raw},
            {"type": "http.response.body", "body": body})


class RequestGuard:
    """Body limit, request timeout and request metrics around the whole app."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float, metrics: ServeMetrics,
                 api_key: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "started": False}
        path = route_path(scope)  # now: routing (a mount) rewrites the scope's paths

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            declared = _content_length(scope)
            if header(scope, b"content-length") is not None and header(scope, b"transfer-encoding") is not None:
                for message in json_error(400, AMBIGUOUS_LENGTH, {"connection": "close"}):
                    await send_counted(message)
                return
            if self.api_key is not None and _protected(path) and not self._authorized(scope):
                headers = {"www-authenticate": "Bearer"}
                if declared or header(scope, b"transfer-encoding") is not None:
                    headers["connection"] = "close"  # the body stays unread: the connection cannot be reused
                for message in json_error(401, UNAUTHORIZED, headers):
                    await send_counted(message)
                return
            if declared is not None and declared > self.max_body_bytes:
                for message in json_error(413, BodyTooLarge(self.max_body_bytes).detail, {"connection": "close"}):
                    await send_counted(message)
                return
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise BodyTooLarge(self.max_body_bytes)
                return message

            try:
                await asyncio.wait_for(self.app(scope, receive_limited, send_counted), self.timeout_s)
            except asyncio.TimeoutError:
                if state["started"]:
                    raise
                message = f"request took longer than {self.timeout_s:g} s: retry later, or send fewer images"
                for part in json_error(503, message, {"retry-after": "1"}):
                    await send_counted(part)
            except Exception as error:  # a bug or a model failure: answer 500 and keep serving
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                if state["started"]:
                    raise
                for part in json_error(500, f"internal error ({type(error).__name__}); the server keeps running"):
                    await send_counted(part)
        finally:
            route = _route_label(scope, path)
            self.metrics.requests.labels(route, _method_label(scope["method"]), _status_label(state["status"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        given = header(scope, b"x-api-key")
        if given is None:
            scheme, _, token = (header(scope, b"authorization") or b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else _basic_password(token) \
                if scheme.lower() == b"basic" else None
        return given is not None and hmac.compare_digest(given, self.api_key)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the --root-path prefix a proxy serves the app under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def _basic_password(token: bytes) -> bytes | None:
    """The password of HTTP basic auth: how Label Studio sends a key to an ML backend (its only auth for one)."""
    try:
        return base64.b64decode(token.strip(), validate=True).partition(b":")[2]
    except (binascii.Error, ValueError):
        return None


def _protected(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def _route_label(scope: Scope, path: str) -> str:
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):  # a route template, set by the router on a match: a fixed set
        return route
    return "static" if path.startswith("/static/") else "other"


def _method_label(method: str) -> str:
    return method if method in METHODS else "other"


def _status_label(status: int) -> str:
    return str(status) if status in STATUSES else f"{status // 100}xx" if 100 <= status < 600 else "other"


__all__ = ["RequestGuard", "BodyTooLarge", "json_error", "header", "route_path", "METHODS", "STATUSES", "OPEN_PATHS"]
