"""What a connection is held to (ConnectionLimits, from the settings), and the part of the
connection protocol that holds it there by the clock (LimitedConnection): the connection cap,
the header, body and send timeouts, and the answer that closes a connection past one."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from batched_event_api.http import answers
from batched_event_api.http.rules import MAX_URL
from batched_event_api.http.transport import HeadJoiningTransport

if TYPE_CHECKING:
    from batched_event_api.config import Settings

log = logging.getLogger("batched_event_api")

MIN_RATE_GRACE = 5.0  # seconds a body has before its average rate is checked (Kestrel's grace period)
# Bytes handed to the parser at a time, so that reading can stop between requests: a body of
# known length goes in whole pieces (up to BODY_SLICE), anything else in small ones, since one
# piece may hold dozens of tiny pipelined requests, every one parsed before the next check.
HEAD_SLICE = 1024
BODY_SLICE = 1024 * 1024


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
            max(settings.max_header_size, MAX_URL) + HEAD_SLICE,
            answers.head_too_large(settings.max_header_size),
        )


def _cancelled(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel a timer if armed; None, to store in its place."""
    if timer is not None:
        timer.cancel()
    return None


class LimitedConnection(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and the timers of its limits: what
    happens when one fires is here; when each is armed and cancelled is ConnectionProtocol's
    (protocol.py), which derives from it."""

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_started = 0.0  # when the body being read got its turn
    _body_bytes = 0  # of it, received so far
    _write_timer: asyncio.TimerHandle | None = None

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
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

    def _close_with(self, answer: bytes) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            if answer:
                self.out.write_whole(answer)
            self.transport.close()

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

    def _arm_write_timer(self) -> None:
        self._write_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def _cancel_write_timer(self) -> None:
        self._write_timer = _cancelled(self._write_timer)

    def _send_timed_out(self) -> None:
        self._write_timer = None
        log.warning(
            "closed a connection whose client read no answer for %gs (--send-timeout)", self.limits.send_timeout
        )
        self.transport.abort()

    def _arm_keep_alive(self) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
