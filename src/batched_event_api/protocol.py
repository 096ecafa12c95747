"""uvicorn's httptools protocol, serving the ingest route itself and with the limits it lacks.

- `POST /user/event` is served by the protocol (ingest_route.py): no ASGI cycle on the hot path.
  Every other request goes to the ASGI application as before.

- A header timeout: from a connection's opening (or a request's first byte on a kept-alive
  connection) to the end of its headers. uvicorn arms no timer until a first response, so a
  client that connects and says nothing, or dribbles header bytes, would hold its socket forever.
  Past it: 408 and the connection closed (nginx's client_header_timeout).
- A body timeout: from the end of the headers to the end of the body (nginx's
  client_body_timeout, counted for the whole body). Past it: 408 and closed. Kept here, one timer
  per request, rather than around the application's reads: it also covers a body that never
  starts, and costs a fraction of an asyncio.timeout on the hot path.
- One write per response: uvicorn writes a response's status line and headers, then its body,
  two send() calls for every small answer. The transport holds the head back and sends it with
  the body (an interim `100 Continue` goes out at once).
- A connection cap: a connection beyond it is answered 503 and closed at once, before it can
  hold a file descriptor for long (uvicorn's own limit_concurrency answers only once a request's
  headers are in, which an idle socket never sends).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .ingest_route import INGEST_PATH, IngestExchange, IngestRoute

if TYPE_CHECKING:
    from .app import Ingest

log = logging.getLogger("batched_event_api")


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra + b"connection: close\r\n\r\n" + body
    )


_HEADERS_TIMED_OUT = _response("408 Request Timeout", b'{"error":"timed out reading the request headers"}')
_BODY_TIMED_OUT = _response("408 Request Timeout", b'{"error":"timed out reading the request body"}')
_TOO_MANY = _response("503 Service Unavailable", b'{"error":"too many connections; retry shortly"}', b"retry-after: 1\r\n")


def protocol_class(ingest: Ingest) -> type[HttpToolsProtocol]:
    settings = ingest.settings
    route = IngestRoute(ingest)
    header_timeout = settings.header_timeout
    body_timeout = settings.body_timeout
    max_connections = settings.max_connections

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(_HeadJoiningTransport(transport))
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
            if self._is_ingest():
                self._begin_ingest()
            else:
                super().on_headers_complete()
            self._body_timer = self.loop.call_later(body_timeout, self._body_timed_out)

        def _is_ingest(self) -> bool:
            if self.parser.get_method() != b"POST" or (self.parser.should_upgrade() and self._should_upgrade()):
                return False
            path = httptools.parse_url(self.url).path.decode("ascii")  # as uvicorn reads it
            return (urllib.parse.unquote(path) if "%" in path else path) == INGEST_PATH

        def _begin_ingest(self) -> None:
            # uvicorn's on_headers_complete, with an exchange in place of its request cycle.
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            exchange = IngestExchange(route, self, keep_alive, self.expect_100_continue)
            previous, self.cycle = self.cycle, exchange  # type: ignore[assignment]
            if previous is None or previous.response_complete:
                exchange.start()
            else:  # pipelined behind a request still being served
                self.flow.pause_reading()
                self.pipeline.appendleft((exchange, None))  # type: ignore[arg-type]

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # uvicorn starts the next request of the queue this way, from the previous one's
            # answer: a later turn of the loop, so that a queue of requests refused at once is
            # not answered in one deepening chain of calls.
            if type(cycle) is IngestExchange:
                self.loop.call_soon(cycle.start)
            else:
                super()._start_asgi_task(cycle, app)

        def on_body(self, body: bytes) -> None:
            if type(self.cycle) is IngestExchange:
                self.cycle.feed(body)
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if type(self.cycle) is IngestExchange:
                self.cycle.body_complete()
            else:
                super().on_message_complete()

        def on_response_complete(self) -> None:
            self.transport.flush()  # a head without a body (HEAD, 204) goes out now
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._body_timer is not None:
                self._body_timer.cancel()
            for cycle, _ in self.pipeline:
                if type(cycle) is IngestExchange:
                    cycle.connection_lost()
            if type(self.cycle) is IngestExchange:
                self.cycle.connection_lost()
                self.cycle = None  # type: ignore[assignment]  # uvicorn would signal its message event
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
                self.transport.write(_HEADERS_TIMED_OUT)
                self.transport.close()

        def _body_timed_out(self) -> None:
            self._body_timer = None
            if not self.transport.is_closing():
                if self.cycle is not None and not self.cycle.response_started:  # else just close
                    self.transport.write(_BODY_TIMED_OUT)
                self.transport.close()  # the application's next read sees a disconnect

    return Protocol


class _HeadJoiningTransport:
    """A connection's transport that holds a response's head (status line and headers) until the
    next write, so a small answer leaves in one send(). Everything else is the real transport's."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._head = data
            return
        self._transport.write(data)

    def write_whole(self, data: bytes) -> None:
        """A whole response, written as it is."""
        self.flush()
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, ...
        return getattr(self._transport, name)
