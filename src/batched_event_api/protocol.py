"""uvicorn's httptools protocol with the two limits it lacks, so idle sockets cannot pile up.

- A header timeout: from a connection's opening (or a request's first byte on a kept-alive
  connection) to the end of its headers. uvicorn arms no timer until a first response, so a
  client that connects and says nothing, or dribbles header bytes, would hold its socket forever.
  Past it: 408 and the connection closed (nginx's client_header_timeout).
- A connection cap: a connection beyond it is answered 503 and closed at once, before it can
  hold a file descriptor for long (uvicorn's own limit_concurrency answers only once a request's
  headers are in, which an idle socket never sends).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Settings

log = logging.getLogger("batched_event_api")


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra + b"connection: close\r\n\r\n" + body
    )


_TIMED_OUT = _response("408 Request Timeout", b'{"error":"timed out reading the request headers"}')
_TOO_MANY = _response("503 Service Unavailable", b'{"error":"too many connections; retry shortly"}', b"retry-after: 1\r\n")


def protocol_class(settings: Settings) -> type[HttpToolsProtocol]:
    header_timeout = settings.header_timeout
    max_connections = settings.max_connections

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d open, the limit is %d (--max-connections)",
                            len(self.connections) - 1, max_connections)
                transport.write(_TOO_MANY)
                transport.close()
                return
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout, self._headers_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(_TIMED_OUT)
                self.transport.close()

    return Protocol
