"""Form bodies whose text is UTF-8, or a 400 that names the field.

Starlette decodes form text with the charset the request declares and falls back to Latin-1 when the
bytes are not valid in it (``starlette.formparsers._user_safe_decode``; URL-encoded bodies are decoded
as Latin-1 outright, and ``%XX`` escapes that are not UTF-8 become U+FFFD): bytes that are not UTF-8
would silently turn into other labels and build a classifier. Here every field value, field name and
file name is decoded as strict UTF-8 (a declared charset other than UTF-8 is refused too), and the
first one that is not becomes ``HTTPException(400)`` naming it. A multipart body that ends before its
closing boundary (``--BOUNDARY--``) is refused with a 400 too: Starlette keeps the parts that ended and drops
the one cut short, so a cut upload would be answered with fewer labels or images than were sent.
``StrictFormRoute`` is the FastAPI route class that gives the app's routes a request parsing forms this way.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

MAX_NAME_SHOWN = 40
#: the one message for a multipart body that ends before its closing boundary (the lean path refuses alike)
CUT_SHORT = ("the form ended before its closing boundary: the upload was cut short (or is not multipart); "
             "send the whole body")


def _utf8(data: bytes | bytearray, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise MultiPartException(f"{what} is not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}): "
                                 "send text fields as UTF-8") from None


def _shown(name: str) -> str:
    return repr(name[:MAX_NAME_SHOWN] + ("..." if len(name) > MAX_NAME_SHOWN else ""))


class StrictMultiPartParser(MultiPartParser):
    """Starlette's multipart parser with strict UTF-8 for field values, field names and file names."""

    async def parse(self) -> FormData:
        _, params = parse_options_header(self.headers["Content-Type"])
        charset = params.get(b"charset")
        if charset is not None:
            try:
                known = codecs.lookup(charset.decode("latin-1")).name
            except LookupError:
                known = None
            if known != "utf-8":
                raise MultiPartException(f"form charset {charset.decode('latin-1')[:MAX_NAME_SHOWN]!r} is not "
                                         "accepted: send the form as UTF-8")
        self._ended = False
        form = await super().parse()
        if not self._ended:
            for file in self._files_to_close_on_error:
                file.close()
            raise MultiPartException(CUT_SHORT)
        return form

    def on_end(self) -> None:
        """python-multipart calls this on the closing boundary only (``finalize`` does not check for it)."""
        self._ended = True

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        name = _utf8(options[b"name"], "a form field's name") if b"name" in options else None
        if b"filename" in options:
            _utf8(options[b"filename"], f"the file name in field {_shown(name or '')}")
        super().on_headers_finished()  # decodes as UTF-8 (checked above), counts fields and files

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            name = self._current_part.field_name
            self.items.append((name, _utf8(self._current_part.data, f"form field {_shown(name)}")))
        else:
            super().on_part_end()


class StrictFormParser(FormParser):
    """Starlette's URL-encoded form parser with strict UTF-8 after ``%XX`` unescaping."""

    def on_field_end(self) -> None:
        self._current_fields += 1
        if self._current_fields > self.max_fields:
            raise MultiPartException(f"Too many fields. Maximum number of fields is {self.max_fields}.")
        name = _utf8(unquote_to_bytes(bytes(self._field_name).replace(b"+", b" ")), "a form field's name")
        value = unquote_to_bytes(bytes(self._field_value).replace(b"+", b" "))
        self._items.append((name, _utf8(value, f"form field {_shown(name)}")))


class StrictFormRequest(Request):
    """A request whose ``form()`` uses the strict parsers (the rest of ``Request._get_form`` unchanged)."""

    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        if self._form is None:
            content_type, _ = parse_options_header(self.headers.get("Content-Type"))
            parsers = {b"multipart/form-data": StrictMultiPartParser, b"application/x-www-form-urlencoded":
                       StrictFormParser}
            parser_class = parsers.get(content_type)
            if parser_class is None:
                self._form = FormData()
                return self._form
            options = {"max_fields": max_fields, "max_part_size": max_part_size}
            if parser_class is StrictMultiPartParser:
                options["max_files"] = max_files
            stream = self.stream()
            try:
                self._form = await parser_class(self.headers, stream, **options).parse()
            except MultiPartException as error:
                raise HTTPException(status_code=400, detail=error.message) from None
            finally:
                await stream.aclose()
        return self._form


class StrictFormRoute(APIRoute):
    """FastAPI route class: the endpoint gets a ``StrictFormRequest``. Set ``app.router.route_class`` to it
    before adding routes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictFormRequest(request.scope, request.receive, request._send))

        return strict_handler


__all__ = ["CUT_SHORT", "StrictFormRoute", "StrictFormRequest", "StrictMultiPartParser", "StrictFormParser"]
