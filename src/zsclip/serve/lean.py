"""The lean path of ``POST /v1/classify``: the common request answered without the framework's per-request work.

On a small model most of a request's CPU time went to the web framework, not the model: dependency
resolution, a spooled ``UploadFile`` per upload, form and response validation through pydantic. This
ASGI layer sits inside ``guard.RequestGuard`` (so the API key, the body limit, the request timeout and
the request metrics apply exactly as before) and answers the common request itself: uploads in
``images``, a ``classifier`` id or ``labels`` (with ``templates``), an optional ``top_k``, each text
field UTF-8. It does the route's work with the route's functions (work.py) and sends the same JSON.

Anything else is handed to the FastAPI route with the body replayed: another field, a repeated
single field, a video, an upload that does not decode, a label tree, any value the route would
refuse (a ``ClientError`` before the images are queued). So every refusal, and its message, stays
the route's own; only a full queue (429) or shutdown (503) met while queueing is answered here,
with the route's body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..job.heads import HeadOptions
from .batching import Announcement, QueueClosed, QueueFull
from .guard import BodyTooLarge, header, json_error, route_path
from .inputs import ClientError
from .metrics import ServeMetrics
from .work import ServerState, answer_images, decode_upload, is_video, make_head, resolve_classifier, shown_name

PATH = "/v1/classify"
#: the fields the lean path answers; any other field goes to the route (which knows them all, or refuses)
TEXT_FIELDS = frozenset({"labels", "classifier", "templates", "top_k"})
#: as the route's form parser: a text field over 1 MiB, or more than 1000 parts, is the route's to refuse
MAX_TEXT_BYTES = 1024 * 1024
MAX_PARTS = 1000


@dataclass
class SimpleForm:
    """A classify form the lean path answers."""

    images: list[tuple[str, bytes]]
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    classifier: str | None = None
    top_k: int | None = None


class _Fallback(Exception):
    """Not the lean path's request after all: the route answers it."""


def parse_simple_form(content_type: bytes, body: bytes, max_images: int, max_top_k: int) -> SimpleForm | None:
    """The form when ``body`` is a multipart classify form of the common kind (see the module), else None."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary or b"charset" in params:
        return None
    parts = _parts(boundary, body)
    if parts is None or len(parts) > MAX_PARTS:
        return None
    form = SimpleForm(images=[])
    for headers, data in parts:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name, filename = _text(options.get(b"name")), _text(options.get(b"filename"))
        if name == "images" and filename:
            form.images.append((filename, bytes(data)))
            continue
        value = _text(data) if len(data) <= MAX_TEXT_BYTES else None
        if name not in TEXT_FIELDS or b"filename" in options or value is None:
            return None
        if name == "labels" or name == "templates":
            getattr(form, name).append(value)
        elif name == "classifier" and form.classifier is None and value:
            form.classifier = value
        elif name == "top_k" and form.top_k is None and value.isascii() and value.isdigit() and len(value) < 7 \
                and 1 <= int(value) <= max_top_k:
            form.top_k = int(value)
        else:
            return None
    return form if 1 <= len(form.images) <= max_images else None


def _parts(boundary: bytes, body: bytes) -> list[tuple[dict[bytes, bytes], bytearray]] | None:
    """(lower-case headers, data) per part, or None when the body is not well-formed multipart, closing
    boundary included: a body cut short is the route's to refuse (forms.py), never answered from what came."""
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    name, value = bytearray(), bytearray()
    ended = []

    def header_end() -> None:
        parts[-1][0][bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, bytearray())),
        "on_part_data": lambda data, start, end: parts[-1][1].extend(data[start:end]),
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError, IndexError):
        return None
    return parts if ended else None


def _text(data: bytes | bytearray | None) -> str | None:
    if data is None:
        return None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


class LeanClassify:
    """ASGI layer in front of the FastAPI app: common classify requests are answered here (see the module)."""

    def __init__(self, app: ASGIApp, *, server, metrics: ServeMetrics) -> None:
        self.app = app
        self.server = server  # the FastAPI app: its state holds the running ServerState
        self.metrics = metrics
        self._route = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type") if scope["type"] == "http" else None
        if content_type is None or scope["method"] != "POST" or route_path(scope) != PATH \
                or content_type[:19].lower() != b"multipart/form-data":
            await self.app(scope, receive, send)
            return
        current: ServerState | None = getattr(self.server.state, "zsclip", None)
        if current is None:
            await self.app(scope, receive, send)
            return
        # announced from the first byte: while this body arrives, a batch forming may wait for its image
        with current.queue.expecting() as announced:
            await self._answer(scope, receive, send, current, content_type, announced)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, current: ServerState, content_type: bytes,
                      announced: Announcement) -> None:
        try:
            body = await _read_body(receive)
        except BodyTooLarge as error:  # the rest of the body stays unread: the connection cannot be reused
            await self._send(scope, send, *json_error(413, error.detail, {"connection": "close"}))
            return
        if body is None:  # the client went away
            return
        limits = current.settings.limits
        form = None if current.shutting_down else parse_simple_form(content_type, body, limits.max_images,
                                                                    limits.max_top_k)
        if form is not None:
            try:
                content = await self._classify(current, form, announced)
            except (_Fallback, ClientError):
                form = None
            except (QueueFull, QueueClosed) as error:  # the images were counted and refused: as the route does
                status, text = (429, f"server busy: {error}; retry shortly") if isinstance(error, QueueFull) \
                    else (503, str(error))
                await self._send(scope, send, *json_error(status, text, {"retry-after": "1"}))
                return
        if form is None:
            current.queue.withdraw(announced)  # the route announces (and submits) this request itself
            await self.app(scope, _replay(body, receive), send)
            return
        payload = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await self._send(scope, send, {"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]},
            {"type": "http.response.body", "body": payload})

    async def _classify(self, current: ServerState, form: SimpleForm, announced: Announcement) -> dict:
        if any(is_video(name, data) for name, data in form.images):
            raise _Fallback
        entry_task = asyncio.ensure_future(resolve_classifier(current, form.labels, form.classifier, form.templates))
        try:
            decoded = await asyncio.gather(*(decode_upload(current, name, data) for name, data in form.images))
            entry = await entry_task
        finally:
            if not entry_task.done():
                entry_task.cancel()
        if entry.is_tree or any(isinstance(item, str) for item in decoded):
            raise _Fallback
        head = await make_head(current, entry, HeadOptions(top_k=form.top_k), [])
        return await answer_images(current, self.metrics, entry, head, [shown_name(name) for name, _ in form.images],
                                   decoded, announced)

    async def _send(self, scope: Scope, send: Send, *messages: Message) -> None:
        scope["route"] = self._classify_route()  # the request metrics count it under the route's template
        for message in messages:
            await send(message)

    def _classify_route(self):
        if self._route is None:
            self._route = next(r for r in self.server.routes if getattr(r, "path", None) == PATH
                               and "POST" in getattr(r, "methods", ()))
        return self._route


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` once, then whatever the connection says (a disconnect)."""
    pending: Iterable[Message] = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def replayed() -> Message:
        for message in pending:
            return message
        return await receive()

    return replayed


__all__ = ["LeanClassify", "SimpleForm", "parse_simple_form"]
