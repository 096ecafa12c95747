"""A request's cycle on a connection, as the connection protocol (protocol.py) drives it:
IngestCycle serves `POST /user/event` in the place of uvicorn's RequestResponseCycle, and
CycleTransport joins an application response's head to its body."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from batched_event_api.http.exchange import IngestRequest, IngestRoute
from batched_event_api.http.transport import HeadJoiningTransport

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Connection(Protocol):
    """What an IngestCycle uses of its connection (protocol.py's ConnectionProtocol)."""

    route: IngestRoute
    headers: list[tuple[bytes, bytes]]  # of the request whose head was just parsed
    transport: asyncio.Transport
    out: HeadJoiningTransport
    server_state: Any

    def on_response_complete(self) -> None: ...


class CycleTransport:
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

    def __init__(self, protocol: Connection, keep_alive: bool, expect_continue: bool) -> None:
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
