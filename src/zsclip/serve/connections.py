"""Connection-level bounds that uvicorn does not have: a deadline for a request's headers.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) and, with ``limit_concurrency``,
answers 503 beyond a number of connections, but a client that sends its request headers one line a
second holds its connection (and a slot of that limit) for as long as it likes. ``header_timeout_protocol``
returns uvicorn's own HTTP protocol class with one addition: from the moment a connection can take a
request (when it opens, and after each response) the client has ``seconds`` to complete that request's
headers; past it the server answers 408 (when part of a request came) and closes the connection.
The body is not covered here: ``guard.RequestGuard`` bounds the whole request, upload included.
"""

from __future__ import annotations

import asyncio
import json

#: what a client that started a request and did not finish its headers in time receives
_TIMEOUT_BODY = json.dumps({"error": "request headers not completed in time", "status": 408}).encode()
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


def header_timeout_protocol(seconds: float, base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``base``, default the one it picks itself: httptools when installed,
    else h11) with a deadline of ``seconds`` for each request's headers. Pass it as ``uvicorn.Config(http=...)``."""
    if not seconds > 0:
        raise ValueError(f"header timeout must be positive, got {seconds!r}")
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class HeaderTimeoutProtocol(base):  # type: ignore[misc, valid-type]
        """Both of uvicorn's HTTP/1.1 protocols set ``self.cycle`` when a request's headers are complete
        and call ``on_response_complete`` when its response is sent: the deadline runs in between."""

        header_timeout_s = seconds

        def connection_made(self, transport) -> None:
            self._header_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            waiting = self._header_timer is not None
            if waiting:
                self._request_begun = True
            before = self.cycle
            super().data_received(data)
            if waiting and self.cycle is not before:  # the headers are complete: the request runs
                self._disarm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._request_begun = False
            self._cycle_when_armed = self.cycle
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout_expired)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout_expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.cycle is not self._cycle_when_armed:
                return
            if self._request_begun:  # nothing is sent on an idle connection: a client could read it as its answer
                self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    HeaderTimeoutProtocol.__name__ = HeaderTimeoutProtocol.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


__all__ = ["header_timeout_protocol"]
