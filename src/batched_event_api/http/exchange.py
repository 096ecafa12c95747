"""`POST /user/event` apart from the connection it arrives on: what every ingest request of a
server shares (IngestRoute), and one request from its head to its answer's status and body
(IngestRequest). The HTTP server (uvicorn_server/) feeds it the head and body as they are
parsed and writes the answer it is handed."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batched_event_api.errors import ClientError, StorageError
from batched_event_api.http.access import RequestLog
from batched_event_api.http.answers import error_body, json_body
from batched_event_api.http.auth import BearerAuth
from batched_event_api.http.pending import PendingBytes
from batched_event_api.http.rules import INGEST_PATH, BodyReader, check_head

if TYPE_CHECKING:
    from batched_event_api.commit.writer import Applied
    from batched_event_api.service import Ingest

log = logging.getLogger("batched_event_api")

Answer = Callable[[int, bytes, dict[str, str]], None]  # status, JSON body, extra headers


class IngestRoute:
    """What every ingest request of one server shares: the pipeline, the limits, the log."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        settings = ingest.settings
        self.max_body, self.max_pending = settings.max_body, settings.max_pending
        self.pending = PendingBytes(settings.max_pending)  # bodies received, not yet written
        self.auth = BearerAuth(settings.auth_token)  # ingest and /metrics
        self.requests = RequestLog(ingest.metrics)  # every route's metrics and access line
        ingest.metrics.pending.set_function(lambda: self.pending.used)
        self._default_headers: list[tuple[bytes, bytes]] | None = None
        self._default_head = b""

    async def unready_reason(self) -> str | None:
        """Why the service cannot take a request now, or None when it can (for /readyz)."""
        if (problem := await self.ingest.storage_problem()) is not None:
            return problem
        if self.pending.used + self.max_body > self.max_pending:
            return "pending-bytes limit reached: no room for a request of --max-body bytes"
        if (refused := self.ingest.refusal()) is not None:
            return f"upload backlog full: {refused.message}"
        return None

    def default_head(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The server's default headers (date, server) as bytes, joined again only when the server
        swaps in a new list (each second)."""
        if headers is not self._default_headers:
            self._default_headers = headers
            self._default_head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        return self._default_head


class IngestRequest:
    """One ingest request: its head checked once its headers are in, its body taken as it
    arrives (counted against the pending-bytes budget), then submitted; its answer's status,
    JSON body and headers handed to the connection, and its access line kept."""

    __slots__ = ("route", "started", "hold", "reader", "key", "error", "size")

    def __init__(self, route: IngestRoute, headers: list[tuple[bytes, bytes]]) -> None:
        self.route = route
        self.started = time.perf_counter()
        self.hold = route.pending.hold()
        self.reader: BodyReader | None = None
        self.key: str | None = None
        self.error: ClientError | None = None
        self.size = 0
        try:
            head = check_head(headers, route.auth, route.max_body)
            self.key = head.key
            self.error = route.ingest.refusal()
            if self.error is None:
                self.reader = BodyReader(route.max_body, self.hold, head)
        except ClientError as exc:
            self.error = exc

    def feed(self, chunk: bytes) -> bool:
        """Take a piece of the body; True when it is refused by this piece (the rest is dropped)."""
        if self.error is not None or self.reader is None:
            return False
        try:
            self.reader.feed(chunk)
        except ClientError as exc:
            self.error = exc
            return True
        return False

    def release(self) -> None:
        """Its body is let go (never written): its share of the budget is given back."""
        self.hold.release()

    def serve(self, answer: Answer) -> None:
        """Write its body (or refuse it): `answer` is called once, when the outcome is known."""
        if self.error is not None or self.reader is None:
            self._finish(answer, None, self.error)
            return
        try:
            body = self.reader.finish()
        except ClientError as exc:
            self._finish(answer, None, exc)
            return
        self.size = len(body)
        self.route.ingest.submit(body, self.key, functools.partial(self._finish, answer))

    def _finish(self, answer: Answer, applied: Applied | None, error: BaseException | None) -> None:
        self.hold.release()
        headers: dict[str, str] = {}
        if applied is not None:
            accepted: dict[str, Any] = {"accepted": applied.accepted}
            if applied.replay:
                accepted["replay"] = True
            status, payload = 200, json_body(accepted)
        elif isinstance(error, ClientError):
            status, payload, headers = error.status, error_body(error), error.headers
        elif isinstance(error, StorageError):
            status, payload = 503, error_body(ClientError(str(error), status=503))
        else:
            log.error("unexpected error in %s", INGEST_PATH, exc_info=error)
            status, payload = 500, error_body(ClientError("internal error", status=500))
        answer(status, payload, headers)
        self.route.requests.record(
            "POST",
            INGEST_PATH,
            INGEST_PATH,
            status,
            time.perf_counter() - self.started,
            applied.accepted if applied is not None else 0,
            self.size,
        )
