"""The HTTP shell: routes, limits, errors and metrics, wired to the pure core and the writer.

`POST /user/event` is served by a lean ASGI handler (the framework's router costs a visible share
on one-event requests); Starlette serves everything else, including the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import openapi
from .closing import IdleClose
from .committer import Committer
from .config import Align, Compress, Settings, SyncMany
from .errors import ClientError, StorageError
from .metrics import Metrics
from .pending import Hold, PendingBytes
from .prepare import SLICE, prepare
from .render import COLUMNS
from .syncround import SYNCFS_FROM
from .windows import WindowPolicy
from .writer import Applied, Committed, Request, Writer

log = logging.getLogger("batched_event_api")
access_log = logging.getLogger("batched_event_api.access")

INGEST_PATH = "/user/event"
# What curl sends without -H (application/x-www-form-urlencoded) is taken as NDJSON, as the
# reference did; types that are clearly something else are refused.
ACCEPTED_TYPES = {"", "application/x-ndjson", "application/jsonl", "application/json", "text/plain",
                  "application/x-www-form-urlencoded"}
# Bodies larger than this are prepared off the event loop, in slices on several threads.
_INLINE_PREPARE = 256 * 1024
_SPACE_MARGIN = 1 << 20  # bytes of free space beyond a refused request's size before /readyz says ready
_PREPARE_THREADS = min(4, os.cpu_count() or 1)
_JSON = msgspec.json.Encoder()


class Ingest:
    """One server's ingest pipeline: body -> events -> rows -> the single writer thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = metrics = Metrics()
        policy = WindowPolicy(settings.interval_ns, aligned=settings.align is Align.INTERVAL)
        self.writer = Writer(
            settings.output,
            policy,
            fsync=settings.fsync,
            header=",".join(COLUMNS) + "\n" if settings.header else "",
            max_keys=settings.max_keys,
            compress=settings.compress is Compress.GZIP,
            syncfs_from=SYNCFS_FROM if settings.sync_many is SyncMany.FILESYSTEM else None,
        )
        # All writer calls run on this one thread, in submission order: that is the serialization.
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        # Requests that arrive while a round is written are written together in the next one.
        self.committer: Committer[Request, Applied] = Committer(
            self.writer.apply_group, self._writer_thread, on_round=metrics.group_size.observe
        )
        # The native pass releases the GIL: slices of a large body are prepared on these in parallel.
        self._prepare_threads = ThreadPoolExecutor(max_workers=_PREPARE_THREADS, thread_name_prefix="prepare")
        self.idle_close = IdleClose(settings.idle_close, self._commit_open)
        self.pending = PendingBytes(settings.max_pending)  # bodies received, not yet written
        metrics.pending.set_function(lambda: self.pending.used)
        self._space_needed = 0  # bytes of a request refused for a full disk, until a request is written

    def open(self) -> None:
        """Take the output directory and recover it (before serving: a problem is one clear line)."""
        self.writer.start()

    async def start(self) -> None:
        """Serving begins: the directory was opened (open())."""
        self._update_open_gauges()
        if self.writer.open is not None or not self.writer.healthy:
            # A window recovered after a crash (or a publish left to retry) gets its idle commit too.
            self.idle_close.touch()

    async def stop(self) -> None:
        self.idle_close.stop()
        try:
            await self._commit_open()
        except StorageError as exc:
            log.error("could not commit the open window at shutdown (kept, resumed on restart): %s", exc)
        await self._on_writer(self.writer.close)
        self._writer_thread.shutdown()
        self._prepare_threads.shutdown()

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        # Even without fsync the writer gzips windows, writes up to 64 MiB and renames: never on
        # the event loop, where it would stall every connection.
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def apply(self, body: bytes, key: str | None) -> Applied:
        max_line = self.settings.max_line
        if len(body) > _INLINE_PREPARE:
            slice_size = min(SLICE, len(body) // _PREPARE_THREADS + 1)
            work = partial(prepare, body, max_line, slice_size=slice_size, map=self._prepare_threads.map)
            prepared = await asyncio.get_running_loop().run_in_executor(None, work)
        else:
            prepared = prepare(body, max_line)
        try:
            applied = await self.committer.commit(Request(prepared.times, prepared.rows, key))
        except StorageError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # Its rows, plus room for the journal and the blocks of new part files.
                self._space_needed = len(body) + _SPACE_MARGIN
            raise
        self._space_needed = 0
        m = self.metrics
        if applied.replay:
            m.replays.inc()
        else:
            m.events.inc(applied.accepted)
            m.late.inc(applied.late)
            self._record_commits(applied.committed)
        if applied.accepted and not applied.replay:
            self.idle_close.touch()
        return applied

    async def unready_reason(self) -> str | None:
        """Why the service cannot take a request now, or None when it can."""
        if not (self.writer.healthy or await self._on_writer(self.writer.heal)):
            return f"storage error: {self.writer.problem}"
        if not os.access(self.settings.output, os.W_OK):
            return "the output directory is not writable"
        if self._space_needed:
            fs = os.statvfs(self.settings.output)
            if fs.f_bavail * fs.f_frsize < self._space_needed:
                return "storage error: the disk is full"
        if self.pending.used + self.settings.max_body > self.settings.max_pending:
            return "pending-bytes limit reached: no room for a request of --max-body bytes"
        return None

    def _record_commits(self, committed: list[Committed]) -> None:
        for c in committed:
            self.metrics.windows.inc()
            log.info("committed %s rows=%d bytes=%d", c.name, c.rows, c.size)
        self._update_open_gauges()

    def _update_open_gauges(self) -> None:
        w = self.writer.open
        self.metrics.open_start.set(w.start / 1e9 if w else 0)
        self.metrics.open_rows.set(w.rows if w else 0)

    async def _commit_open(self) -> None:
        """Commit the open window (idle, shutdown) and publish what is committed."""
        self._record_commits(await self._on_writer(self.writer.commit_open))
        if not self.writer.healthy and not await self._on_writer(self.writer.heal):
            raise StorageError(self.writer.problem)


# -- the raw ASGI ingest route ----------------------------------------------------------------


class BearerAuth:
    """`Authorization: Bearer <token>` when a token is configured, compared in constant time."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    def check(self, authorization: str) -> None:
        if self._expected is not None and not hmac.compare_digest(authorization.encode(), self._expected):
            raise ClientError(
                "missing or wrong bearer token", status=401, headers={"www-authenticate": 'Bearer realm="batched-event-api"'}
            )


class IngestEndpoint:
    def __init__(self, ingest: Ingest, settings: Settings, metrics: Metrics) -> None:
        self.ingest = ingest
        self.settings = settings
        self.metrics = metrics
        self.auth = BearerAuth(settings.auth_token)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            status, body_json, headers, events, size = await self._handle(scope, receive)
            scope["bea"].update(events=events, bytes=size)
        except ClientError as exc:
            status, body_json, headers = exc.status, exc.to_json(), exc.headers
        except StorageError as exc:
            status, body_json, headers = 503, {"error": str(exc)}, {}
        except Exception:
            log.exception("unexpected error in %s", INGEST_PATH)
            status, body_json, headers = 500, {"error": "internal error"}, {}
        await _send_json(send, status, _JSON.encode(body_json), headers)

    async def _handle(self, scope: dict, receive: Any) -> tuple[int, Any, dict[str, str], int, int]:
        if scope["method"] != "POST":
            raise ClientError("method not allowed: use POST", status=405, headers={"allow": "POST"})
        headers = _headers(scope)
        self.auth.check(headers.get("authorization", ""))
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in ACCEPTED_TYPES:
            raise ClientError(
                f"unsupported Content-Type {media_type!r}: send NDJSON as application/x-ndjson", status=415
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise ClientError(f"unsupported Content-Encoding {encoding!r}: use gzip or none", status=415)
        key = headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
            raise ClientError("Idempotency-Key must be 1 to 200 printable characters", field="Idempotency-Key")
        with self.ingest.pending.hold() as hold:
            body = await read_body(receive, headers, self.settings, hold, gzip=encoding == "gzip")
            self.metrics.bytes.inc(len(body))
            applied = await self.ingest.apply(body, key)
        response: dict[str, Any] = {"accepted": applied.accepted}
        if applied.replay:
            response["replay"] = True
        return 200, response, {}, applied.accepted, len(body)


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Any, headers: dict[str, str], settings: Settings, hold: Hold, *, gzip: bool) -> bytearray:
    """The whole request body, never holding more than the limit (after decompression), counted
    against the pending-bytes budget: by Content-Length before reading, else as it arrives."""
    limit = settings.max_body
    declared = headers.get("content-length", "")
    known = declared.isdigit() and not gzip  # else counted as the (decompressed) body arrives
    if known:
        size = int(declared)
        if size > limit:
            raise _too_large(limit)
        hold.take(size)
    gunzip = _Gunzip() if gzip else None
    body = bytearray()  # grows in place: no second copy of a large body

    def take(message: dict) -> bool:
        if message["type"] == "http.disconnect":
            raise ClientError("client disconnected", status=400)
        chunk = message.get("body", b"")
        if gunzip is not None:
            chunk = gunzip.feed(chunk, limit - len(body), limit)
        if len(body) + len(chunk) > limit:
            raise _too_large(limit)
        if not known:
            hold.take(len(chunk))
        body.extend(chunk)
        return message.get("more_body", False)

    # --body-timeout is kept by the HTTP protocol (protocol.py): past it, 408 and the connection
    # closed, which this loop sees as a disconnect.
    while take(await receive()):
        pass
    if gunzip is not None and not gunzip.complete:
        raise ClientError("truncated gzip body", status=400)
    return body


def _too_large(limit: int) -> ClientError:
    return ClientError(f"request body larger than the limit of {limit} bytes", status=413)


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
                    raise _too_large(limit)
                out.append(piece)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error as exc:
            raise ClientError(f"corrupt gzip body: {exc}", status=400) from None
        return b"".join(out)


async def _send_json(send: Any, status: int, payload: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


# -- the application --------------------------------------------------------------------------


def create_app(settings: Settings, ingest: Ingest) -> Any:
    """The ASGI application over an opened Ingest."""
    metrics = ingest.metrics
    endpoint = IngestEndpoint(ingest, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        await ingest.start()
        yield
        await ingest.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = await ingest.unready_reason()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "error": reason}, status_code=503)

    async def metrics_route(request: Request) -> Response:
        try:
            endpoint.auth.check(request.headers.get("authorization", ""))
        except ClientError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi_route(request: Request) -> Response:
        return JSONResponse(openapi.DOCUMENT)

    async def docs(request: Request) -> Response:
        return HTMLResponse(openapi.DOCS_HTML)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no route {request.url.path}"}, status_code=404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        return JSONResponse({"error": "method not allowed"}, status_code=405, headers=headers)

    framework = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/openapi.json", openapi_route, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Mount(openapi.DOCS_ASSETS, StaticFiles(directory=openapi.swagger_ui_files()), name="docs-assets"),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )

    routes = {route.path for route in framework.routes} | {INGEST_PATH}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await framework(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        scope["bea"] = {"events": 0, "bytes": 0}

        async def send_and_watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["path"] == INGEST_PATH:
                await endpoint(scope, receive, send_and_watch)
            else:
                await framework(scope, receive, send_and_watch)
        finally:
            _observe(scope, status, time.perf_counter() - started, metrics, routes)

    return app


def _observe(scope: dict, status: int, elapsed: float, metrics: Metrics, routes: set[str]) -> None:
    """One access line and the request metrics (never the body, never the Authorization header)."""
    path = scope["path"]
    route = path if path in routes else "other"
    metrics.observe_request(route, status, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        stats = scope["bea"]
        access_log.info(
            "%s %s %d events=%d bytes=%d duration_ms=%.2f",
            scope["method"], path, status, stats["events"], stats["bytes"], elapsed * 1000,
            extra={"method": scope["method"], "path": path, "status": status, "events": stats["events"],
                   "bytes": stats["bytes"], "duration_ms": round(elapsed * 1000, 3)},
        )
