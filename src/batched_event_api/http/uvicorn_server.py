"""The HTTP server, on uvicorn: everything that knows uvicorn's insides is here, and what it
relies on is listed in UVICORN_RELIES_ON (tests/test_uvicorn_contract.py checks each against the
installed uvicorn, so that an upgrade that drops one fails with its name).

uvicorn's httptools protocol is subclassed (ConnectionProtocol) to serve the ingest route itself
and to add the limits it lacks:

- `POST /user/event` is served by the protocol: an IngestCycle stands in the connection's queue
  where uvicorn keeps a RequestResponseCycle, so no ASGI cycle runs on the hot path. Every other
  request goes to the ASGI application (routes.py).
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

Server adds the line saying where it serves and a clean exit after SIGTERM; run() serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from batched_event_api.http import answers
from batched_event_api.http.exchange import IngestRequest, IngestRoute
from batched_event_api.http.routes import create_app
from batched_event_api.http.rules import INGEST_PATH, MAX_URL, head_without_upgrade
from batched_event_api.http.transport import HeadJoiningTransport

if TYPE_CHECKING:
    from batched_event_api.config import Settings

log = logging.getLogger("batched_event_api")

# What the protocol (and uvicorn) reads of the request in a connection's `cycle`: an IngestCycle
# has them too, to stand in for uvicorn's RequestResponseCycle.
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "keep_alive", "more_body", "disconnected")

# What this module relies on in uvicorn, where each is looked up ("module" or "module:qualname")
# and by kind: a class, a mapping, a method, an attribute (assigned as `self.<name>` in the
# class's code), a keyword parameter (of the class), or a fact of the code (text it contains).
UVICORN_RELIES_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "uvicorn": {"class": ("Config", "Server")},
    "uvicorn.protocols.http.httptools_impl": {
        "class": ("HttpToolsProtocol", "RequestResponseCycle"),
        "mapping": ("STATUS_LINE",),
    },
    "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol": {
        "method": (
            # overridden
            "__init__",
            "connection_made",
            "data_received",
            "on_message_begin",
            "on_url",
            "on_header",
            "on_headers_complete",
            "_start_asgi_task",
            "on_body",
            "on_message_complete",
            "on_response_complete",
            "pause_writing",
            "resume_writing",
            "shutdown",
            "connection_lost",
            # called
            "_unset_keepalive_if_required",
            "_should_upgrade",
            "handle_websocket_upgrade",
            "timeout_keep_alive_handler",
        ),
        "attribute": (
            "cycle",
            "pipeline",
            "flow",
            "parser",
            "transport",
            "headers",
            "url",
            "connections",
            "loop",
            "server_state",
            "expect_100_continue",
            "timeout_keep_alive",
            "timeout_keep_alive_task",
        ),
        # The cycle in the way of a new one is asked only whether it is answered.
        "source": ("existing_cycle.response_complete",),
    },
    "uvicorn.protocols.http.httptools_impl:RequestResponseCycle": {
        "method": ("send", "receive"),
        "attribute": ("message_event", "transport", *CYCLE_ATTRIBUTES),
        # The head is the first write once response_started is set (_CycleTransport).
        "source": ("self.response_started = True",),
    },
    "uvicorn.protocols.http.flow_control:FlowControl": {
        "method": ("pause_reading", "resume_reading"),
        "attribute": ("read_paused", "write_paused"),
    },
    "uvicorn.server:ServerState": {"attribute": ("total_requests", "default_headers")},
    "uvicorn.server:Server": {
        "method": ("__init__", "run", "startup", "capture_signals", "handle_exit"),
        "attribute": ("started", "config"),
    },
    # The protocol class is called with keyword arguments: a partial with the route works as one.
    "uvicorn.server:Server.startup": {
        "source": ("config.http_protocol_class(", "config=config", "server_state=", "app_state=", "_loop=")
    },
    "uvicorn.config:Config": {
        "parameter": (
            "app",
            "host",
            "port",
            "loop",
            "http",
            "lifespan",
            "access_log",
            "proxy_headers",
            "log_config",
            "timeout_keep_alive",
            "timeout_graceful_shutdown",
        ),
    },
}

MIN_RATE_GRACE = 5.0  # seconds a body has before its average rate is checked (Kestrel's grace period)
_MAX_QUEUED = 8  # pipelined requests parsed ahead of the one being answered
# Bytes handed to the parser at a time, so that reading can stop between requests: a body of
# known length goes in whole pieces (up to _BODY_SLICE), anything else in small ones, since one
# piece may hold dozens of tiny pipelined requests, every one parsed before the next check.
_HEAD_SLICE = 1024
_BODY_SLICE = 1024 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def run(settings: Settings, route: IngestRoute, listener: socket.socket) -> bool:
    """Serve on the listening socket until a signal (or a failed startup): whether it started."""
    config = uvicorn.Config(
        create_app(route),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        # uvicorn calls it with keyword arguments, as it would the class (Server.startup).
        http=cast(
            "type[asyncio.Protocol]",
            functools.partial(ConnectionProtocol, route=route, limits=ConnectionLimits.of(settings)),
        ),
        lifespan="on",
        access_log=False,  # ours is batched_event_api.access, with the events and bytes of each request
        proxy_headers=False,  # no client address is used, so X-Forwarded-For is not read
        log_config=None,
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]  # a float works: call_later
        timeout_graceful_shutdown=30,
    )
    server = Server(config, settings)
    server.run(sockets=[listener])
    return server.started


class Server(uvicorn.Server):
    """Says where it listens once it does, and exits 0 after a graceful SIGTERM/SIGINT shutdown
    (uvicorn re-raises the signal)."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            settings = self.settings
            host, port = sockets[0].getsockname()[:2]
            where = f"{settings.bucket} (state in {settings.output})" if settings.bucket else settings.output
            log.info(
                "serving on http://%s:%d, writing to %s (interval %gs, idle close %gs, fsync %s)",
                f"[{host}]" if ":" in host else host,
                port,
                where,
                settings.interval,
                settings.idle_close,
                "always" if settings.fsync else "never",
            )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


class ConnectionLimits(NamedTuple):
    """The limits every connection of a server is held to, from its settings."""

    header_timeout: float
    body_timeout: float
    min_rate: int
    max_head: int
    max_connections: int
    send_timeout: float
    head_bound: int  # bytes fed while a head is read: past it, the head is too large
    head_too_large: bytes  # the 431 answer

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            settings.header_timeout,
            settings.body_timeout,
            settings.min_body_rate,
            settings.max_header_size,
            settings.max_connections,
            settings.send_timeout,
            max(settings.max_header_size, MAX_URL) + _HEAD_SLICE,
            answers.head_too_large(settings.max_header_size),
        )


def _cancelled(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel a timer if armed; None, to store in its place."""
    if timer is not None:
        timer.cancel()
    return None


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops there (and is not used again)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer


class ConnectionProtocol(HttpToolsProtocol):
    """One connection: uvicorn's httptools protocol, serving the ingest route itself and with the
    limits it lacks (see the module's docstring)."""

    # uvicorn's request cycle, or an IngestCycle in its place (and so in the queue)
    cycle: Any
    pipeline: deque[tuple[Any, Any]]

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

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        route: IngestRoute,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.route = route
        self.limits = limits
        self.out: HeadJoiningTransport = None  # type: ignore[assignment]  # the transport, from connection_made

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.out = HeadJoiningTransport(transport)
        super().connection_made(self.out)  # type: ignore[arg-type]  # it stands in for the transport
        limit = self.limits.max_connections
        if len(self.connections) > limit:
            log.warning(
                "refused a connection: %d open, the limit is %d (--max-connections)", len(self.connections) - 1, limit
            )
            transport.write(answers.TOO_MANY_CONNECTIONS)
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
        head_bound = self.limits.head_bound
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
                    self._refuse(self.limits.head_too_large)  # one endless line: refused before it is whole
                    return
                piece = view[offset : offset + (min(self._body_left, _BODY_SLICE) if self._body_left else _HEAD_SLICE)]
                offset += len(piece)
                try:
                    self.parser.feed_data(piece)
                except httptools.HttpParserUpgrade as exc:
                    if self._should_upgrade():
                        self.handle_websocket_upgrade()
                        return
                    if self.parser.get_method() == b"CONNECT":  # an upgrade by its method: no HTTP/1.1 form
                        self._refuse(answers.NOT_ALLOWED)
                        return
                    # Served as HTTP/1.1: its head again without the upgrade, then what followed it.
                    parser = self.parser
                    head = head_without_upgrade(
                        parser.get_method(), self.url, parser.get_http_version().encode(), self.headers
                    )
                    view, offset = memoryview(head + piece[exc.args[0] :] + view[offset:]), 0
                    self.parser = httptools.HttpRequestParser(self)
                    self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets it
                    continue
                except httptools.HttpParserError as exc:
                    cause = exc.__context__
                    self._refuse(cause.answer if isinstance(cause, _HeadTooLarge) else answers.INVALID)
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

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_size, self._upgrade_ignored, self._declared = True, 0, False, None
        if self._header_timer is None and not self._unanswered():
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > MAX_URL:
            raise _HeadTooLarge(answers.URL_TOO_LONG)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_head:
            raise _HeadTooLarge(self.limits.head_too_large)
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
            return
        previous = self.cycle
        super().on_headers_complete()  # its body timer is armed as it starts (_start_asgi_task)
        if self.cycle is not previous:  # a request cycle for the application: its head joins its body
            self.cycle.transport = _CycleTransport(self.out, self.cycle)

    def _is_ingest(self) -> bool:
        if self.parser.get_method() != b"POST" or (self.parser.should_upgrade() and self._should_upgrade()):
            return False
        path = httptools.parse_url(self.url).path.decode("ascii")  # as uvicorn reads it
        return (urllib.parse.unquote(path) if "%" in path else path) == INGEST_PATH

    def _begin_ingest(self) -> None:
        # uvicorn's on_headers_complete, with an IngestCycle in place of its request cycle.
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        cycle = IngestCycle(self, keep_alive, self.expect_100_continue)
        previous, self.cycle = self.cycle, cycle
        if previous is None or previous.response_complete:
            self._arm_body_timer()
            cycle.start()
        else:  # pipelined behind a request still being served
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if cycle is self._broken:  # cut off mid-body: its turn is the connection's end
            self._close_with(self._last_words or b"")
            return
        if cycle is self.cycle and cycle.more_body and not self._stopped:
            self._arm_body_timer()  # its turn: its body is read from now on
        # uvicorn starts the next request of the queue this way, from the previous one's
        # answer: a later turn of the loop, so that a queue of requests refused at once is
        # not answered in one deepening chain of calls.
        if type(cycle) is IngestCycle:
            self.loop.call_soon(cycle.start)
        else:
            self._running = cycle
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_left is not None:
            self._body_left -= len(body)
        if type(self.cycle) is IngestCycle:
            self.cycle.feed(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._upgrade_ignored:
            return
        self._body_left = None
        self._cancel_body_timer()
        if type(self.cycle) is IngestCycle:
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
        self.out.flush()  # a head without a body (HEAD, 204) goes out now
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
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def pause_writing(self) -> None:
        # The client does not read its answers: nothing more is read from it (_backed_up), and
        # past --send-timeout the connection is closed, giving back what its queued requests hold.
        super().pause_writing()
        if self._closing_down:  # the server is stopping: no waiting for a client that does not read
            self.transport.abort()
        elif self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_timer = _cancelled(self._write_timer)
        self._catch_up()

    def _send_timed_out(self) -> None:
        self._write_timer = None
        log.warning(
            "closed a connection whose client read no answer for %gs (--send-timeout)", self.limits.send_timeout
        )
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
            elif type(cycle) is IngestCycle:
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
                self.out.write_whole(answer)
            self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping: requests received are answered; one still arriving is not waited for."""
        self._closing_down = True
        if self.flow.write_paused or self._held:  # its client reads no answers: none would arrive
            self.transport.abort()
        elif self._reading_head or (
            self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete
        ):
            self._refuse(answers.SHUTTING_DOWN)
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
            if type(cycle) is IngestCycle:
                cycle.connection_lost()
            elif cycle is not None and cycle is not self.cycle:  # uvicorn tells only the last one parsed
                cycle.disconnected = True
                cycle.message_event.set()
        if type(self.cycle) is IngestCycle:
            self.cycle.connection_lost()
            self.cycle = None  # uvicorn would signal its message event
        super().connection_lost(exc)

    # -- timers

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        self._header_timer = _cancelled(self._header_timer)

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        self._close_with(answers.HEADERS_TIMED_OUT)

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_started, self._body_bytes = time.monotonic(), 0
        limits = self.limits
        first_check = min(limits.body_timeout, MIN_RATE_GRACE) if limits.min_rate else limits.body_timeout
        self._body_timer = self.loop.call_later(first_check, self._check_body)

    def _cancel_body_timer(self) -> None:
        self._body_timer = _cancelled(self._body_timer)

    def _check_body(self) -> None:
        """The body's deadline, or (with --min-body-rate) its average rate, once a second after its grace."""
        self._body_timer = None
        elapsed = time.monotonic() - self._body_started
        body_timeout = self.limits.body_timeout
        if elapsed >= body_timeout:
            self._body_timed_out(answers.BODY_TIMED_OUT)
        elif self._body_bytes < self.limits.min_rate * elapsed:
            self._body_timed_out(answers.BODY_TOO_SLOW)
        else:
            self._body_timer = self.loop.call_later(min(1.0, body_timeout - elapsed), self._check_body)

    def _body_timed_out(self, answer: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:  # else just close
            self.transport.write(answer)
        self.transport.close()  # the application's next read sees a disconnect


class _CycleTransport:
    """The transport as one application request's cycle writes to it. RequestResponseCycle.send
    sets response_started, then writes the status line and headers at once: the first write
    after that is the head, held to leave with the body. Anything before it (`100 Continue`)
    and after it goes out as written."""

    __slots__ = ("_connection", "_cycle", "_head_written")

    def __init__(self, connection: HeadJoiningTransport, cycle: Any) -> None:
        self._connection = connection
        self._cycle = cycle
        self._head_written = False

    def write(self, data: bytes) -> None:
        if not self._head_written and self._cycle.response_started:
            self._head_written = True
            self._connection.hold(data)
        else:
            self._connection.write(data)

    def __getattr__(self, name: str) -> Any:  # close, is_closing, ...
        return getattr(self._connection, name)


class IngestCycle:
    """One `POST /user/event` on one connection, from its head to its answer.

    It stands in the connection's queue where uvicorn keeps a RequestResponseCycle, so it has the
    attributes the protocol and uvicorn read of one (response_started, response_complete,
    keep_alive, more_body, disconnected); the protocol calls start() when the request is next to
    be served. Driven by callbacks, not a task: the parser's (body), then the committer's (the
    round is durable). The request itself (its head, body and outcome) is an IngestRequest.
    Kept (tests/test_http.py, tests/test_limits.py): keep-alive; pipelined requests answered in
    order; chunked bodies; `Expect: 100-continue` answered when the request is next to be served
    and its head was accepted; 413 before an oversize body is read.
    """

    __slots__ = (
        "request",
        "protocol",
        "keep_alive",
        "response_started",
        "response_complete",
        "disconnected",
        "more_body",
        "running",
        "serving",
        "expect_continue",
        "last_words",
    )

    def __init__(self, protocol: ConnectionProtocol, keep_alive: bool, expect_continue: bool) -> None:
        self.protocol = protocol
        self.request = IngestRequest(protocol.route, protocol.headers)
        self.keep_alive = keep_alive
        self.response_started = self.response_complete = self.disconnected = False
        self.running = self.serving = False  # its turn came; its body went on to be written
        self.more_body = True
        self.expect_continue = expect_continue
        self.last_words: bytes | None = None  # a whole closing answer, from the protocol (refuse())

    # -- from the protocol

    def start(self) -> None:
        """Its turn: serve it once its body is in (or it failed)."""
        self.running = True
        if self.more_body and self.request.error is None and not self.disconnected:
            if self.expect_continue:
                self.protocol.transport.write(_CONTINUE)
                self.expect_continue = False
            return
        self._serve()

    def feed(self, chunk: bytes) -> None:
        # A refused body is answered at once; the rest of it is dropped as it comes.
        if not self.response_complete and self.request.feed(chunk) and self.running:
            self._serve()

    def body_complete(self) -> None:
        self.more_body = False
        if self.running:
            self._serve()

    def refuse(self, answer: bytes) -> None:
        """No more of its body will be read (a malformed body, a shutdown): answered with this
        whole response, which closes the connection, in its turn."""
        self.more_body = False
        self.last_words = answer
        if self.running:
            self._serve()

    def connection_lost(self) -> None:
        self.disconnected = True
        if not self.serving:  # its body, whole or not, is let go; one being written is kept
            self.serving = True
            self.request.release()

    # -- serving

    def _serve(self) -> None:
        if self.serving:
            return
        self.serving = True
        if self.last_words is not None:
            self.request.release()
            self.response_started = self.response_complete = True
            if not self.disconnected:
                self.protocol.out.write_whole(self.last_words)
                self.protocol.transport.close()
            return
        self.request.serve(self._answer)

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        protocol = self.protocol
        if self.disconnected or protocol.transport.is_closing():
            return
        if self.expect_continue and self.more_body:
            # Refused before its body was asked for: the client may still send it, or may not;
            # either way the connection cannot be reused for a next request.
            self.keep_alive = False
        head = [
            STATUS_LINE[status],
            protocol.route.default_head(protocol.server_state.default_headers),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload),
        ]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(payload)
        self.response_started = self.response_complete = True
        protocol.out.write_whole(b"".join(head))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
