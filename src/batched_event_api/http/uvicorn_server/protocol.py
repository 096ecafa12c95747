"""The connection protocol: uvicorn's httptools protocol (by way of LimitedConnection, limits.py)
serving the ingest route itself, answering in request order, reading no more than it can hold,
and capping heads and URLs; what each of these means is in the package's docstring."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from typing import Any

import httptools
import uvicorn

from batched_event_api.http import answers
from batched_event_api.http.exchange import IngestRoute
from batched_event_api.http.rules import INGEST_PATH, MAX_URL, head_without_upgrade
from batched_event_api.http.uvicorn_server.cycle import CycleTransport, IngestCycle
from batched_event_api.http.uvicorn_server.limits import BODY_SLICE, HEAD_SLICE, ConnectionLimits, LimitedConnection

log = logging.getLogger("batched_event_api")

_MAX_QUEUED = 8  # pipelined requests parsed ahead of the one being answered


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops there (and is not used again)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer


class ConnectionProtocol(LimitedConnection):
    """One connection: uvicorn's httptools protocol, serving the ingest route itself and with the
    limits it lacks (see the package's docstring)."""

    # uvicorn's request cycle, or an IngestCycle in its place (and so in the queue)
    cycle: Any
    pipeline: deque[tuple[Any, Any]]

    _body_left: int | None = None  # bytes of the body being parsed still to come, when its length is known
    _declared: bytes | None = None  # the Content-Length of the head being parsed
    _head_size = 0  # bytes of the head being read, as the parser reports them
    _head_fed = 0  # bytes fed to the parser while a head was being read (a long line is reported only once whole)
    _running: Any = None  # the application's request being served (uvicorn tracks only the last parsed)
    _broken: Any = None  # an application's request cut off mid-body: the last words go in its place
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
        super().__init__(config, server_state, app_state, _loop, limits=limits)
        self.route = route

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
                piece = view[offset : offset + (min(self._body_left, BODY_SLICE) if self._body_left else HEAD_SLICE)]
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
            self.cycle.transport = CycleTransport(self.out, self.cycle)

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

    def pause_writing(self) -> None:
        # The client does not read its answers: nothing more is read from it (_backed_up), and
        # past --send-timeout the connection is closed, giving back what its queued requests hold.
        super().pause_writing()
        if self._closing_down:  # the server is stopping: no waiting for a client that does not read
            self.transport.abort()
        elif self._write_timer is None:
            self._arm_write_timer()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()
        self._catch_up()

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
        self._cancel_write_timer()
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
