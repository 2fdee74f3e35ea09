"""One ASGI middleware that bounds every HTTP request in bytes and time, and counts it.

- Body size: a declared Content-Length over the limit is refused (413) before a byte is read; a
  body without one (chunked) is counted as it streams and refused when it passes the limit.
- Time: the whole request, upload included, gets ``timeout_s``; past it the handler is cancelled
  (queued images are dropped from the batching queue) and the client gets 503 with Retry-After.
- Metrics: requests by route template, method and status, and their latency.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so it wraps the body stream itself and adds no
task per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ServeMetrics

log = logging.getLogger("zsclip.serve")


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

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float, metrics: ServeMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "started": False}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            declared = _content_length(scope)
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
            route = scope.get("route")
            label = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static/") else "other")
            self.metrics.requests.labels(label, scope["method"], str(state["status"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


__all__ = ["RequestGuard", "BodyTooLarge", "json_error"]
