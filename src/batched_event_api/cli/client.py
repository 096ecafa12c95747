"""The `send` client: stream NDJSON files to the service in ordered chunks, retrying safely.

Each chunk carries an Idempotency-Key made of a per-run prefix, the file's index and the chunk's
index, so a chunk retried after a timeout or a server restart is applied once. With several
servers (instances behind no load balancer) the chunks go round-robin; a chunk moves to the next
server only when its own refused the connection (it never got the chunk): a server that may have
applied it is the only one that can answer its resend as a replay, so otherwise it stays there.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import httpx

from batched_event_api.backoff import Backoff
from batched_event_api.config import SEND_DEFAULTS

# Answers worth retrying: the request may succeed later unchanged.
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0  # seconds: the longest Retry-After honoured as given


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes
    first_line: int  # 1-based line number in its file of the chunk's first line
    lines: int


@dataclass(slots=True)
class Summary:
    files: int = 0
    requests: int = 0
    events: int = 0  # newly applied
    bytes: int = 0  # of the chunks newly applied
    replays: int = 0  # requests answered as already applied (a resend)
    replayed_events: int = 0
    retries: int = 0
    seconds: float = 0.0


class SendError(Exception):
    """The server refused a chunk (4xx) or stayed unreachable through every retry."""


def chunks(stream: BinaryIO, max_lines: int, max_bytes: int) -> Iterator[Chunk]:
    """Whole lines, in order, at most max_lines and (but for a single longer line) max_bytes a chunk."""
    buffer: list[bytes] = []
    size = 0
    first = 1
    number = 0
    for line in stream:
        number += 1
        if buffer and (len(buffer) >= max_lines or size + len(line) > max_bytes):
            yield Chunk(b"".join(buffer), first, len(buffer))
            buffer, size, first = [], 0, number
        if not line.endswith(b"\n"):
            line += b"\n"
        buffer.append(line)
        size += len(line)
    if buffer:
        yield Chunk(b"".join(buffer), first, len(buffer))


class ProgressReport(Protocol):
    """Told about every chunk applied and every retry (the progress bar)."""

    def advance(self, events: int, size: int) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass
class Sender:
    urls: list[str]
    batch_lines: int = SEND_DEFAULTS.batch_lines
    batch_bytes: int = SEND_DEFAULTS.batch_bytes
    gzip: bool = SEND_DEFAULTS.gzip
    auth_token: str | None = field(default=None, repr=False)  # never shown, not even in a repr
    retries: int = SEND_DEFAULTS.retries
    timeout: float = SEND_DEFAULTS.timeout
    key_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: ProgressReport | None = None

    def __post_init__(self) -> None:
        headers = {"Content-Type": "application/x-ndjson", "User-Agent": "batched-event-api-send"}
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        self._client = httpx.Client(headers=headers, timeout=self.timeout)
        self.endpoints = [
            url.rstrip("/") + ("" if url.rstrip("/").endswith("/user/event") else "/user/event") for url in self.urls
        ]
        # Servers that answered at least once: a refused connection there is a restart, worth the
        # retries; where nothing ever answered, it is a wrong URL or port, said at once.
        self._answered: set[int] = set()

    @property
    def reached(self) -> bool:
        """Whether any server answered (else nothing was applied, and there is nothing to resume)."""
        return bool(self._answered)

    def close(self) -> None:
        self._client.close()

    def send_files(self, paths: list[str]) -> Summary:
        summary = Summary()
        started = time.monotonic()
        sequence = 0  # chunks of every file, in order: the round-robin
        for index, path in enumerate(paths):
            with open_input(path) as stream:
                for number, chunk in enumerate(chunks(stream, self.batch_lines, self.batch_bytes)):
                    server = sequence % len(self.endpoints)
                    self._send_chunk(chunk, f"{self.key_prefix}:{index}:{number}", path, summary, server)
                    sequence += 1
            summary.files += 1
        summary.seconds = time.monotonic() - started
        return summary

    def _send_chunk(self, chunk: Chunk, key: str, path: str, summary: Summary, server: int) -> None:
        body = gzip_module.compress(chunk.data, compresslevel=5) if self.gzip else chunk.data
        backoff = Backoff(0.2, 10.0)  # seconds between retries of one chunk
        refused = 0  # servers in a row that refused the connection
        for attempt in range(self.retries + 1):
            problem = ""
            wait = delay = backoff.failed()  # spent only if this attempt fails
            endpoint = self.endpoints[server]
            try:
                response = self._client.post(endpoint, content=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                problem = f"{endpoint}: {type(exc).__name__}: {exc}"
                if isinstance(exc, httpx.ConnectError):  # never sent: the next server may take it
                    server = (server + 1) % len(self.endpoints)
                    refused += 1
                    if refused < len(self.endpoints):
                        wait = 0.0  # another server is still untried
                    else:
                        refused = 0
                        if not self._answered:
                            raise SendError(
                                f"nothing is listening at {' or '.join(self.urls)} ({_reason(exc)}): "
                                "is the server running, and is this its address and port?"
                            ) from None
            else:
                self._answered.add(server)
                if response.status_code == 200:
                    answer = response.json()
                    summary.requests += 1
                    if answer.get("replay"):
                        summary.replays += 1
                        summary.replayed_events += answer.get("accepted", 0)
                    else:
                        summary.events += answer.get("accepted", 0)
                        summary.bytes += len(chunk.data)  # what this run applied: replays were sent before
                    if self.progress is not None:
                        self.progress.advance(answer.get("accepted", 0), len(chunk.data))
                    return
                if response.status_code not in RETRY_STATUSES:
                    raise SendError(_describe_refusal(response, chunk, path))
                problem = f"HTTP {response.status_code}: {_error_text(response)}"
                asked = _retry_after(response)
                if asked is not None:  # the server said when: no sooner (and not for ever)
                    wait = min(max(asked, delay), MAX_RETRY_AFTER)
            if attempt == self.retries:
                raise SendError(
                    f"{path}: lines {chunk.first_line}-{chunk.first_line + chunk.lines - 1}: "
                    f"gave up after {self.retries} retries: {problem}"
                )
            summary.retries += 1
            if self.progress is not None:
                self.progress.note(f"retrying in {wait:.1f}s: {problem}")
            time.sleep(wait)  # backoff between retries of a real network call


def _reason(exc: httpx.ConnectError) -> str:
    """The operating system's words for a failed connection ("Connection refused"), without errno."""
    text = str(exc)
    return text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by this service)."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]


def _describe_refusal(response: httpx.Response, chunk: Chunk, path: str) -> str:
    try:
        error = response.json()
    except ValueError:
        error = {"error": response.text[:200]}
    where = path
    if isinstance(error.get("line"), int):
        where += f":{chunk.first_line + error['line'] - 1}"
    field = f" (field {error['field']})" if error.get("field") else ""
    return f"{where}: HTTP {response.status_code}: {error.get('error')}{field}"


def total_bytes(paths: list[str]) -> int | None:
    """Total size of the inputs, for the progress bar's ETA (None for stdin or gzip input, whose
    size says little of what is sent)."""
    if "-" in paths:
        return None
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            if _is_gzip(f):
                return None
        total += Path(path).stat().st_size
    return total


_GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A file (or - for stdin) as NDJSON bytes: gzip input (by its magic bytes, whatever its name)
    is decompressed while read."""
    raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        yield cast(BinaryIO, gzip_module.GzipFile(fileobj=raw)) if _is_gzip(raw) else raw
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _is_gzip(stream: BinaryIO) -> bool:
    peek = getattr(stream, "peek", None)
    if peek is not None:  # stdin and buffered files: nothing consumed
        return peek(2)[:2] == _GZIP_MAGIC
    head = stream.read(2)
    stream.seek(0)
    return head == _GZIP_MAGIC
