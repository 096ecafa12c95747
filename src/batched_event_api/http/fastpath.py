"""uvicorn's httptools protocol, serving the ingest route itself and with the limits it lacks.

- `POST /user/event` is served by the protocol (ingest_route.py): no ASGI cycle on the hot path.
  Every other request goes to the ASGI application as before.

- Answers leave in request order, whatever happens after a request: a pipelined request's
  timers run only once the requests before it are answered (its turn), and a malformed request,
  an oversize head or a shutdown behind requests still being served is answered after them.
- A header timeout: from a connection's opening (or a request's first byte, once the requests
  before it are answered) to the end of its headers. uvicorn arms no timer until a first
  response, so a client that connects and says nothing, or dribbles header bytes, would hold its
  socket forever. Past it: 408 and the connection closed (nginx's client_header_timeout).
- A body timeout: from the end of the headers (or the request's turn) to the end of the body,
  counted for the whole body (nginx's client_body_timeout); and a minimum rate a body must
  average once it has had a grace period (Kestrel's MinRequestBodyDataRate), so that a trickle
  does not hold a connection for the whole timeout. Past either: 408 and closed.
- A cap on the head (`--max-header-size`, 431) and the URL (8 KiB, 414): httptools buffers
  whatever it is given.
- Bounded memory per connection: at most a few pipelined requests are parsed ahead of the one
  being answered, and nothing more is read while the client leaves its answers unread (the
  transport's writing is paused); the bytes already received wait unparsed.
- `Upgrade` other than to a WebSocket (`curl --http2` over http asks for h2c) is ignored and the
  request served as HTTP/1.1, as RFC 9110 allows: llhttp would hand its body over as upgrade data.
- At shutdown a connection still receiving a head or a body is answered 503 and closed at once
  (once the requests before it are answered), rather than waited for.
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
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from batched_event_api.errors import RETRY_AFTER
from batched_event_api.http.ingest import INGEST_PATH, IngestExchange, IngestRoute

if TYPE_CHECKING:
    pass

log = logging.getLogger("batched_event_api")

MAX_URL = 8 * 1024  # nginx's default large_client_header_buffers line
MIN_RATE_GRACE = 5.0  # seconds a body has before its average rate is checked (Kestrel's grace period)
_MAX_QUEUED = 8  # pipelined requests parsed ahead of the one being answered
# Bytes handed to the parser at a time, so that reading can stop between requests: a body of
# known length goes in whole pieces (up to _BODY_SLICE), anything else in small ones, since one
# piece may hold dozens of tiny pipelined requests, every one parsed before the next check.
_HEAD_SLICE = 1024
_BODY_SLICE = 1024 * 1024


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


_HEADERS_TIMED_OUT = _response("408 Request Timeout", b'{"error":"timed out reading the request headers"}')
_BODY_TIMED_OUT = _response("408 Request Timeout", b'{"error":"timed out reading the request body"}')
_BODY_TOO_SLOW = _response("408 Request Timeout", b'{"error":"the request body arrived slower than --min-body-rate"}')
_TOO_MANY = _response(
    "503 Service Unavailable", b'{"error":"too many connections; retry shortly"}', b"retry-after: 1\r\n"
)
_INVALID = _response("400 Bad Request", b'{"error":"invalid HTTP request"}')
_URL_TOO_LONG = _response("414 URI Too Long", b'{"error":"request URL longer than %d bytes"}' % MAX_URL)
_NOT_ALLOWED = _response("405 Method Not Allowed", b'{"error":"method not allowed"}')
_SHUTTING_DOWN = _response(
    "503 Service Unavailable",
    b'{"error":"the server is shutting down; retry"}',
    b"retry-after: " + RETRY_AFTER.encode() + b"\r\n",
)
_UPGRADE_TOKENS = {b"upgrade", b"http2-settings"}


def _cancelled(timer: asyncio.TimerHandle | None) -> None:
    """Cancel a timer if armed; None, to store in its place."""
    if timer is not None:
        timer.cancel()


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops there (and is not used again)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer


def protocol_class(route: IngestRoute) -> type[HttpToolsProtocol]:
    settings = route.ingest.settings
    header_timeout = settings.header_timeout
    body_timeout = settings.body_timeout
    min_rate = settings.min_body_rate
    max_head = settings.max_header_size
    max_connections = settings.max_connections
    send_timeout = settings.send_timeout
    head_bound = max(max_head, MAX_URL) + _HEAD_SLICE  # fed while a head is read: past it, the head is too large
    head_too_large = _response(
        "431 Request Header Fields Too Large",
        b'{"error":"request headers larger than %d bytes (--max-header-size)"}' % max_head,
    )

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _body_started = 0.0  # when the body being read got its turn
        _body_bytes = 0  # of it, received so far
        _body_left: int | None = None  # bytes of the body being parsed still to come, when its length is known
        _declared: bytes | None = None  # the Content-Length of the head being parsed
        _head_size = 0  # bytes of the head being read, as the parser reports them
        _head_fed = 0  # bytes fed to the parser while a head was being read (a long line is reported only once whole)
        _running: Any = None  # the application's request being served (uvicorn tracks only the last parsed)
        _broken: Any = None  # an application's request cut off mid-body: the last words go in its place
        _write_timer: asyncio.TimerHandle | None = None
        _closing_down = False  # the server is shutting down
        _reading_head = False  # a request has begun and its headers are not all in
        _upgrade_ignored = False  # the head being read asked for an upgrade we do not make
        _held = b""  # received and not yet parsed: waits while requests are queued or answers unread
        _feeding = False
        _last_words: bytes | None = None  # written (then closed) once every request before is answered
        _stopped = False  # nothing more is read from this connection

        def connection_made(self, transport: Any) -> None:
            super().connection_made(_HeadJoiningTransport(transport))
            if len(self.connections) > max_connections:
                log.warning(
                    "refused a connection: %d open, the limit is %d (--max-connections)",
                    len(self.connections) - 1,
                    max_connections,
                )
                transport.write(_TOO_MANY)
                transport.close()
                return
            self._arm_header_timer()

        # -- reading

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            if self._stopped:
                return
            if self._held:  # read although paused (uvicorn's receive() resumes reading): held too
                self._held += data
                self.flow.pause_reading()
                return
            self._feed(data)

        def _feed(self, data: bytes) -> None:
            view, offset = memoryview(data), 0
            self._feeding = True
            try:
                while offset < len(view) and not self._stopped:
                    if self._backed_up():
                        self._held = bytes(view[offset:])
                        self.flow.pause_reading()
                        # Its bytes are here, unread by us: no timer on the client until they are.
                        self._cancel_header_timer()
                        self._cancel_body_timer()
                        return
                    if self._reading_head and self._head_fed > head_bound:
                        self._refuse(head_too_large)  # one endless line: refused before it is whole
                        return
                    piece = view[
                        offset : offset + (min(self._body_left, _BODY_SLICE) if self._body_left else _HEAD_SLICE)
                    ]
                    offset += len(piece)
                    try:
                        self.parser.feed_data(piece)
                    except httptools.HttpParserUpgrade as exc:
                        if self._should_upgrade():
                            self.handle_websocket_upgrade()
                            return
                        if self.parser.get_method() == b"CONNECT":  # an upgrade by its method: no HTTP/1.1 form
                            self._refuse(_NOT_ALLOWED)
                            return
                        # Served as HTTP/1.1: its head again without the upgrade, then what followed it.
                        view, offset = (
                            memoryview(self._head_without_upgrade() + piece[exc.args[0] :] + view[offset:]),
                            0,
                        )
                        self.parser = httptools.HttpRequestParser(self)
                        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets it
                        continue
                    except httptools.HttpParserError as exc:
                        cause = exc.__context__
                        self._refuse(cause.answer if isinstance(cause, _HeadTooLarge) else _INVALID)
                        return
                    self._head_fed = self._head_fed + len(piece) if self._reading_head else 0
            finally:
                self._feeding = False
            if self.flow.read_paused and not self._unanswered():
                self.flow.resume_reading()  # requests queued meanwhile were all answered at once

        def _queued(self, cycle: Any) -> bool:
            """Is this request waiting behind another for its turn?"""
            return any(queued is cycle for queued, _ in self.pipeline)

        def _backed_up(self) -> bool:
            return len(self.pipeline) >= _MAX_QUEUED or self.flow.write_paused

        def _catch_up(self) -> None:
            """Read on, once no longer backed up: first what was held, then the socket."""
            if self._stopped or self._backed_up() or self._feeding or self.transport.is_closing():
                return
            if self._held:
                data, self._held = self._held, b""
                self._feed(data)
                if self._held or self._stopped:
                    return
                # Waiting on the client again: the timers stopped while its bytes were held.
                cycle = self.cycle
                if self._reading_head:
                    if self._header_timer is None and not self._unanswered():
                        self._arm_header_timer()
                elif cycle is not None and cycle.more_body and self._body_timer is None and not self._queued(cycle):
                    self._arm_body_timer()
            self.flow.resume_reading()

        def _head_without_upgrade(self) -> bytes:
            method, version = self.parser.get_method(), self.parser.get_http_version().encode()
            lines = [method + b" " + self.url + b" HTTP/" + version]
            for name, value in self.headers:
                if name == b"connection":
                    tokens = [t for t in value.split(b",") if t.strip().lower() not in _UPGRADE_TOKENS]
                    if not tokens:
                        continue
                    value = b",".join(tokens)
                elif name in (b"upgrade", b"http2-settings"):
                    continue
                lines.append(name + b": " + value)
            return b"\r\n".join(lines) + b"\r\n\r\n"

        # -- parser callbacks

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading_head, self._head_size, self._upgrade_ignored, self._declared = True, 0, False, None
            if self._header_timer is None and not self._unanswered():
                self._arm_header_timer()

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            if self._head_size > MAX_URL:
                raise _HeadTooLarge(_URL_TOO_LONG)
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_size += len(name) + len(value) + 4
            if self._head_size > max_head:
                raise _HeadTooLarge(head_too_large)
            if len(name) == 14 and name.lower() == b"content-length":
                self._declared = value
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self.parser.should_upgrade() and not self._should_upgrade():
                self._upgrade_ignored = True  # parsed again without it (_feed)
                return
            self._reading_head, self._head_fed = False, 0
            declared = self._declared
            self._body_left = int(declared) if declared is not None and declared.isdigit() else None
            self._cancel_header_timer()
            if self._is_ingest():
                self._begin_ingest()
            else:
                super().on_headers_complete()  # its body timer is armed as it starts (_start_asgi_task)

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
                self._arm_body_timer()
                exchange.start()
            else:  # pipelined behind a request still being served
                self.flow.pause_reading()
                self.pipeline.appendleft((exchange, None))  # type: ignore[arg-type]

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            if cycle is self._broken:  # cut off mid-body: its turn is the connection's end
                self._close_with(self._last_words or b"")
                return
            if cycle is self.cycle and cycle.more_body and not self._stopped:
                self._arm_body_timer()  # its turn: its body is read from now on
            # uvicorn starts the next request of the queue this way, from the previous one's
            # answer: a later turn of the loop, so that a queue of requests refused at once is
            # not answered in one deepening chain of calls.
            if type(cycle) is IngestExchange:
                self.loop.call_soon(cycle.start)
            else:
                self._running = cycle
                super()._start_asgi_task(cycle, app)

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            if self._body_left is not None:
                self._body_left -= len(body)
            if type(self.cycle) is IngestExchange:
                self.cycle.feed(body)
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._upgrade_ignored:
                return
            self._body_left = None
            self._cancel_body_timer()
            if type(self.cycle) is IngestExchange:
                self.cycle.body_complete()
            else:
                super().on_message_complete()
            cycle = self.cycle
            if (
                cycle is not None
                and cycle.response_complete
                and not self.pipeline
                and not self._held
                and self.timeout_keep_alive_task is None
            ):
                # Answered before its body ended (a refusal): idle from now on. uvicorn armed the
                # keep-alive timer at the answer, and the body's bytes since cancelled it.
                self._arm_keep_alive()

        # -- answers

        def on_response_complete(self) -> None:
            # uvicorn's, except that reading resumes only when nothing holds it back, and a
            # refusal waiting behind the requests just answered goes out.
            self.transport.flush()  # a head without a body (HEAD, 204) goes out now
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            elif self._last_words is not None:
                self._close_with(self._last_words)
                return
            elif self._reading_head:
                if self._header_timer is None and not self._held:
                    self._arm_header_timer()
            elif not self._held:  # (held bytes are requests waiting for the client to read: not idle)
                self._arm_keep_alive()
            self._catch_up()

        def _arm_keep_alive(self) -> None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def pause_writing(self) -> None:
            # The client does not read its answers: nothing more is read from it (_backed_up), and
            # past --send-timeout the connection is closed, giving back what its queued requests hold.
            super().pause_writing()
            if self._closing_down:  # the server is stopping: no waiting for a client that does not read
                self.transport.abort()
            elif self._write_timer is None:
                self._write_timer = self.loop.call_later(send_timeout, self._send_timed_out)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._write_timer = _cancelled(self._write_timer)
            self._catch_up()

        def _send_timed_out(self) -> None:
            self._write_timer = None
            log.warning("closed a connection whose client read no answer for %gs (--send-timeout)", send_timeout)
            self.transport.abort()

        def _unanswered(self) -> bool:
            return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

        def _refuse(self, answer: bytes) -> None:
            """Read nothing more; the request being read gets this answer in its turn, then the
            connection is closed."""
            self._stopped, self._held = True, b""
            self.flow.pause_reading()
            self._cancel_header_timer()
            cycle = self.cycle
            if not self._reading_head and cycle is not None and cycle.more_body:
                self._cancel_body_timer()
                if cycle.response_complete:  # answered already (a refusal before its body ended)
                    self.transport.close()
                elif type(cycle) is IngestExchange:
                    cycle.refuse(answer)
                else:  # an application's request cut off mid-body: told the client left, answered for
                    cycle.disconnected, cycle.more_body = True, False
                    cycle.message_event.set()
                    if self._queued(cycle):
                        self._broken, self._last_words = cycle, answer
                    else:  # being served: every request before it is answered
                        self._close_with(answer)
                return
            if self._unanswered():
                self._last_words = answer
            else:
                self._close_with(answer)

        def _close_with(self, answer: bytes) -> None:
            self._cancel_header_timer()
            if not self.transport.is_closing():
                if answer:
                    self.transport.write_whole(answer)
                self.transport.close()

        def shutdown(self) -> None:
            """The server is stopping: requests received are answered; one still arriving is not waited for."""
            self._closing_down = True
            if self.flow.write_paused or self._held:  # its client reads no answers: none would arrive
                self.transport.abort()
            elif self._reading_head or (
                self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete
            ):
                self._refuse(_SHUTTING_DOWN)
            elif not self._unanswered():
                self.transport.close()
            else:
                self._stopped, self._held = True, b""
                self.cycle.keep_alive = False

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            self._cancel_body_timer()
            self._write_timer = _cancelled(self._write_timer)
            self._held, self._stopped = b"", True
            for cycle in [queued for queued, _ in self.pipeline] + [self._running]:
                if type(cycle) is IngestExchange:
                    cycle.connection_lost()
                elif cycle is not None and cycle is not self.cycle:  # uvicorn tells only the last one parsed
                    cycle.disconnected = True
                    cycle.message_event.set()
            if type(self.cycle) is IngestExchange:
                self.cycle.connection_lost()
                self.cycle = None  # type: ignore[assignment]  # uvicorn would signal its message event
            super().connection_lost(exc)

        # -- timers

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout, self._headers_timed_out)

        def _cancel_header_timer(self) -> None:
            self._header_timer = _cancelled(self._header_timer)

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            self._close_with(_HEADERS_TIMED_OUT)

        def _arm_body_timer(self) -> None:
            self._cancel_body_timer()
            self._body_started, self._body_bytes = time.monotonic(), 0
            first_check = min(body_timeout, MIN_RATE_GRACE) if min_rate else body_timeout
            self._body_timer = self.loop.call_later(first_check, self._check_body)

        def _cancel_body_timer(self) -> None:
            self._body_timer = _cancelled(self._body_timer)

        def _check_body(self) -> None:
            """The body's deadline, or (with --min-body-rate) its average rate, once a second after its grace."""
            self._body_timer = None
            elapsed = time.monotonic() - self._body_started
            if elapsed >= body_timeout:
                self._body_timed_out(_BODY_TIMED_OUT)
            elif self._body_bytes < min_rate * elapsed:
                self._body_timed_out(_BODY_TOO_SLOW)
            else:
                self._body_timer = self.loop.call_later(min(1.0, body_timeout - elapsed), self._check_body)

        def _body_timed_out(self, answer: bytes) -> None:
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_started:  # else just close
                self.transport.write(answer)
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
