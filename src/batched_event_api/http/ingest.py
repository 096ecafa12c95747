"""`POST /user/event`, served by the HTTP protocol itself rather than through an ASGI cycle.

At one event per request the ASGI cycle (a scope, receive and send messages, a response built
header by header and checked, a task per message wait) was most of the server's time. Here a
request's head is checked once its headers are in, its body is taken as the parser hands it over,
and its answer is written in one piece. Every other route is left to the ASGI application on the
same port. The HTTP rules kept (tests/test_http.py, tests/test_limits.py): keep-alive; pipelined
requests answered in order (an exchange takes the place of uvicorn's request cycle in the
connection's queue); chunked bodies; `Expect: 100-continue` answered when the request is next to
be served and its head was accepted; 413 before an oversize body is read.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from batched_event_api.errors import ClientError, StorageError
from batched_event_api.http.access import RequestLog
from batched_event_api.http.auth import BearerAuth
from batched_event_api.http.pending import Hold, PendingBytes

if TYPE_CHECKING:
    from batched_event_api.commit.writer import Applied
    from batched_event_api.service import Ingest

log = logging.getLogger("batched_event_api")

INGEST_PATH = "/user/event"
# What curl sends without -H (application/x-www-form-urlencoded) is taken as NDJSON, as the
# reference did; types that are clearly something else are refused.
ACCEPTED_TYPES = {
    "",
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_JSON = msgspec.json.Encoder()


class RequestHead(NamedTuple):
    key: str | None  # the Idempotency-Key
    gzip: bool
    length: int | None  # the Content-Length, when given


def check_head(headers: list[tuple[bytes, bytes]], auth: BearerAuth, limit: int) -> RequestHead:
    """What the headers say of an ingest request, or the ClientError it is refused with."""
    found = {name: value for name, value in headers}  # names come lower-cased from the protocol
    auth.check(found.get(b"authorization", b""))
    media_type = found.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise ClientError(f"unsupported Content-Type {media_type!r}: send NDJSON as application/x-ndjson", status=415)
    encoding = found.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise ClientError(f"unsupported Content-Encoding {encoding!r}: use gzip or none", status=415)
    key = found.get(b"idempotency-key")
    if key is not None:
        key = key.decode("latin-1")
        if not (0 < len(key) <= 200 and key.isprintable()):
            raise ClientError("Idempotency-Key must be 1 to 200 printable characters", field="Idempotency-Key")
    declared = found.get(b"content-length", b"")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > limit and encoding != "gzip":
        raise too_large(limit)
    return RequestHead(key, encoding == "gzip", length)


def too_large(limit: int) -> ClientError:
    return ClientError(f"request body larger than the limit of {limit} bytes", status=413)


class BodyReader:
    """A request body taken as it arrives, never more than the limit (after decompression),
    counted against the pending-bytes budget as it arrives: bytes a client has only announced
    hold nothing (a few connections declaring large bodies and sending none would otherwise lock
    everyone out). A Content-Length that cannot fit beside what is held now is refused before
    any of the body is read."""

    __slots__ = ("_limit", "_hold", "_gunzip", "body")

    def __init__(self, limit: int, hold: Hold, head: RequestHead) -> None:
        self._limit = limit
        self._hold = hold
        if head.length is not None and not head.gzip:
            hold.check(head.length)
        self._gunzip = _Gunzip() if head.gzip else None
        self.body = bytearray()  # grows in place: no second copy of a large body

    def feed(self, chunk: bytes) -> None:
        if self._gunzip is not None:
            chunk = self._gunzip.feed(chunk, self._limit - len(self.body), self._limit)
        if len(self.body) + len(chunk) > self._limit:
            raise too_large(self._limit)
        self._hold.take(len(chunk))
        self.body += chunk

    def finish(self) -> bytearray:
        if self._gunzip is not None and not self._gunzip.complete:
            raise ClientError("truncated gzip body", status=400)
        return self.body


class _Gunzip:
    """Incremental gzip decoding (several members allowed) that stops at the size limit."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=31)
        self._started = False

    @property
    def complete(self) -> bool:
        return not self._started or self._inflater.eof

    def feed(self, data: bytes, room: int, limit: int) -> bytes:
        out: list[bytes] = []
        try:
            while data:
                if self._inflater.eof:  # another gzip member follows
                    self._inflater = zlib.decompressobj(wbits=31)
                self._started = True
                piece = self._inflater.decompress(data, room + 1)
                room -= len(piece)
                if room < 0:
                    raise too_large(limit)
                out.append(piece)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error as exc:
            raise ClientError(f"corrupt gzip body: {exc}", status=400) from None
        return b"".join(out)


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
        """uvicorn's default headers (date, server) as bytes; uvicorn swaps in a new list each second."""
        if headers is not self._default_headers:
            self._default_headers = headers
            self._default_head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        return self._default_head


class IngestExchange:
    """One `POST /user/event` on one connection, from its head to its answer.

    It stands in the connection's queue where uvicorn keeps a RequestResponseCycle, so it has the
    attributes the protocol reads of one (response_started, response_complete, keep_alive); the
    protocol calls start() when the request is next to be served. Driven by callbacks, not a
    task: the parser's (body), then the committer's (the round is durable).
    """

    __slots__ = (
        "route",
        "protocol",
        "started",
        "keep_alive",
        "response_started",
        "response_complete",
        "disconnected",
        "more_body",
        "running",
        "serving",
        "expect_continue",
        "hold",
        "reader",
        "key",
        "error",
        "size",
        "last_words",
    )

    def __init__(self, route: IngestRoute, protocol: Any, keep_alive: bool, expect_continue: bool) -> None:
        self.route = route
        self.protocol = protocol
        self.started = time.perf_counter()
        self.keep_alive = keep_alive
        self.response_started = self.response_complete = self.disconnected = False
        self.running = self.serving = False  # its turn came; its body went on to be written
        self.more_body = True
        self.expect_continue = expect_continue
        self.hold = route.pending.hold()
        self.reader: BodyReader | None = None
        self.key: str | None = None
        self.error: ClientError | None = None
        self.last_words: bytes | None = None  # a whole closing answer, from the protocol (refuse())
        self.size = 0
        try:
            head = check_head(protocol.headers, route.auth, route.max_body)
            self.key = head.key
            self.error = route.ingest.refusal()
            if self.error is None:
                self.reader = BodyReader(route.max_body, self.hold, head)
        except ClientError as exc:
            self.error = exc

    # -- from the protocol

    def start(self) -> None:
        """Its turn: serve it once its body is in (or it failed)."""
        self.running = True
        if self.more_body and self.error is None and not self.disconnected:
            if self.expect_continue:
                self.protocol.transport.write(_CONTINUE)
                self.expect_continue = False
            return
        self._serve()

    def feed(self, chunk: bytes) -> None:
        if self.error is None and not self.response_complete:
            try:
                self.reader.feed(chunk)  # type: ignore[union-attr]
            except ClientError as exc:
                self.error = exc  # answered at once; the rest of the body is dropped as it comes
                if self.running:
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
            self.hold.release()

    # -- serving

    def _serve(self) -> None:
        if self.serving:
            return
        self.serving = True
        if self.last_words is not None:
            self.hold.release()
            self.response_started = self.response_complete = True
            if not self.disconnected:
                self.protocol.transport.write_whole(self.last_words)
                self.protocol.transport.close()
            return
        if self.error is not None:
            self._finish(None, self.error)
            return
        try:
            body = self.reader.finish()  # type: ignore[union-attr]
        except ClientError as exc:
            self._finish(None, exc)
            return
        self.size = len(body)
        self.route.ingest.submit(body, self.key, self._finish)

    def _finish(self, applied: Applied | None, error: BaseException | None) -> None:
        self.hold.release()
        headers: dict[str, str] = {}
        if applied is not None:
            status, payload = 200, {"accepted": applied.accepted}
            if applied.replay:
                payload["replay"] = True
        elif isinstance(error, ClientError):
            status, payload, headers = error.status, error.to_json(), error.headers
        elif isinstance(error, StorageError):
            status, payload = 503, {"error": str(error)}
        else:
            log.error("unexpected error in %s", INGEST_PATH, exc_info=error)
            status, payload = 500, {"error": "internal error"}
        self._answer(status, _JSON.encode(payload), headers)
        self.route.requests.record(
            "POST",
            INGEST_PATH,
            INGEST_PATH,
            status,
            time.perf_counter() - self.started,
            applied.accepted if applied is not None else 0,
            self.size,
        )

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
            self.route.default_head(protocol.server_state.default_headers),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload),
        ]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(payload)
        self.response_started = self.response_complete = True
        protocol.transport.write_whole(b"".join(head))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
