"""The composition root: one server's ingest pipeline (body -> events -> rows -> the writer
thread -> the output), built from the Settings. The HTTP shell (http/) feeds it."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from batched_event_api.commit.disk import FILE_MODE, GROUP_FILE_MODE
from batched_event_api.commit.group import Committer, Done
from batched_event_api.commit.idle import IdleClose
from batched_event_api.commit.sync import SYNCFS_FROM
from batched_event_api.commit.thread import SerialThread
from batched_event_api.commit.windows import StrictWindows, WindowPolicy
from batched_event_api.commit.writer import Applied, Committed, Writer
from batched_event_api.commit.writer import Request as WriteRequest
from batched_event_api.config import Align, Settings, SyncMany
from batched_event_api.errors import ClientError, StorageError
from batched_event_api.events.render import COLUMNS
from batched_event_api.events.transcode import SLICE, Batch, transcode
from batched_event_api.metrics import Metrics
from batched_event_api.output.destination import Destination, destination

log = logging.getLogger("batched_event_api")

# Bodies larger than this are transcoded off the event loop, in slices on several threads.
_INLINE_TRANSCODE = 256 * 1024
_SPACE_MARGIN = 1 << 20  # bytes of free space beyond a refused request's size before /readyz says ready
_TRANSCODE_THREADS = min(4, os.cpu_count() or 1)
_HEAL_EVERY = 1.0  # seconds between recoveries tried by readiness probes


class Ingest:
    """One server's ingest pipeline: body -> events -> rows -> the single writer thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = metrics = Metrics(uploads=settings.store_url is not None)
        policy: WindowPolicy | StrictWindows = (
            StrictWindows(settings.interval_ns, settings.allowed_lateness_ns, settings.max_open_windows)
            if settings.align is Align.INTERVAL
            else WindowPolicy(settings.interval_ns)
        )
        self.writer = Writer(
            settings.output,
            policy,
            fsync=settings.fsync,
            header=",".join(COLUMNS) + "\n" if settings.header else "",
            key_retention=settings.key_retention,
            key_memory=settings.key_memory,
            file_mode=GROUP_FILE_MODE if settings.group_readable else FILE_MODE,
            compress=settings.csv_compression,
            syncfs_from=SYNCFS_FROM if settings.sync_many is SyncMany.FILESYSTEM else None,
            window_ids=settings.store_url is not None,  # a finish stage knows its own creates by them
            max_file_bytes=settings.max_file_bytes,
        )
        # All writer calls run on this one thread, in submission order: that is the serialization.
        self._writer_thread = SerialThread("writer")
        # Requests that arrive while a round is written are written together in the next one.
        # Without fsync, a small round to the open file runs on the event loop (Writer.light).
        self.committer: Committer[WriteRequest, Applied] = Committer(
            self.writer.apply_group,
            self._writer_thread,
            on_round=self._after_round,
            light=None if settings.fsync else self.writer.light,
        )
        # The native pass releases the GIL: slices of a large body are transcoded on these in parallel.
        self._transcode_threads = ThreadPoolExecutor(max_workers=_TRANSCODE_THREADS, thread_name_prefix="transcode")
        self.idle_close = IdleClose(settings.idle_close, self._commit_open)
        self._space_needed = 0  # bytes of a request refused for a full disk, until a request is written
        self._space_free_then = 0  # free bytes once its round was undone
        self._healed_at = -math.inf  # when a readiness probe last tried a recovery
        # Where published windows go next: nowhere (the directory is the output), or a store.
        self.output: Destination = destination(settings, metrics, pinned=lambda: self.writer.pinned)

    def open(self) -> None:
        """Take the output directory and recover it (before serving: a problem is one clear line)."""
        self.writer.start()
        self.output.start()

    async def start(self) -> None:
        """Serving begins: the directory was opened (open())."""
        self._update_open_gauges()
        if self.writer.windows or not self.writer.healthy:
            # Windows recovered after a crash (or a publish left to retry) get their idle commit too.
            self.idle_close.touch()

    async def stop(self) -> None:
        self.idle_close.stop()
        await self.committer.drained()  # requests whose clients left are written before the last commit
        try:
            await self._commit_open()
        except StorageError as exc:
            log.error("could not commit the open windows at shutdown (kept, resumed on restart): %s", exc)
        await self._on_writer(self.writer.close)
        self._writer_thread.shutdown()
        await asyncio.get_running_loop().run_in_executor(None, self.output.drain, self.settings.drain_timeout)
        self.output.stop()
        self._transcode_threads.shutdown()

    def refusal(self) -> ClientError | None:
        """Why a new request is refused before its body is read (the upload backlog is full), or None."""
        return self.output.refusal()

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        # Even without fsync the writer gzips windows, writes up to 64 MiB and renames: never on
        # the event loop, where it would stall every connection (but the small rounds light() allows).
        return await self._writer_thread.call(fn, *args)

    def submit(self, body: bytearray, key: str | None, done: Done) -> None:
        """Transcode and commit one request body; then done(applied, None), or done(None, error)
        with a ClientError (a bad line), a StorageError (the round failed) or a bug."""
        self.metrics.bytes.inc(len(body))
        max_line = self.settings.max_line
        if len(body) <= _INLINE_TRANSCODE:
            try:
                batch = transcode(body, max_line)
            except Exception as exc:
                done(None, exc)
                return
            self._commit(batch, len(body), key, done)
            return
        slice_size = min(SLICE, len(body) // _TRANSCODE_THREADS + 1)
        work = partial(transcode, body, max_line, slice_size=slice_size, map=self._transcode_threads.map)

        def transcoded(future: asyncio.Future[Batch]) -> None:
            if (error := future.exception()) is not None:
                done(None, error)
            else:
                self._commit(future.result(), len(body), key, done)

        asyncio.get_running_loop().run_in_executor(None, work).add_done_callback(transcoded)

    def _commit(self, batch: Batch, size: int, key: str | None, done: Done) -> None:
        # Counted from the request's own times, before the writer sees it: one request of many
        # windows would hold the writer (a file each) for every other request.
        limit = self.settings.max_windows_per_request
        past = self.writer.policy.past_limit(batch.times, limit)
        if past is not None:
            done(
                None,
                ClientError(
                    f"the request opens more than {limit} windows (--max-windows-per-request); "
                    "send fewer events per request",
                    line=batch.line_of(past),
                    status=413,
                ),
            )
            return

        def committed(applied: Applied | None, error: BaseException | None) -> None:
            if applied is not None and (keys_full := applied.keys_full) is not None:
                applied, error = (
                    None,
                    ClientError(
                        "too many Idempotency-Keys kept (--key-memory) to remember one more for --key-retention; "
                        "retry later",
                        status=503,
                        headers={"retry-after": str(min(3600, math.ceil(keys_full)))},
                    ),
                )
            if error is None:
                self._space_needed = 0
            elif isinstance(error, StorageError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                # Its rows, plus room for the journal and the blocks of new part files.
                # (The writer undid the round before answering: this is the free space without it.)
                self._space_needed, self._space_free_then = size, _free_space(self.settings.output)
            done(applied, error)

        self.committer.submit(WriteRequest(batch, key), committed)

    def _after_round(self, size: int, outcomes: list[Applied] | None) -> None:
        """The metrics of a commit round, counted once per round rather than per request."""
        m = self.metrics
        m.group_size.observe(size)
        if outcomes is None:  # the round failed: nothing of it was written
            return
        events = late = replays = 0
        committed: list[Committed] = []
        for applied in outcomes:
            if applied.replay:
                replays += 1
            else:
                events += applied.accepted
                late += applied.late
                committed += applied.committed
        if replays:
            m.replays.inc(replays)
        if events:
            m.events.inc(events)
            m.late.inc(late)
            self.idle_close.touch()
        self._record_commits(committed)

    async def storage_problem(self) -> str | None:
        """Why the storage cannot take a request now, or None when it can."""
        if not (self.writer.healthy or await self._heal()):
            return f"storage error: {self.writer.problem}"
        if not os.access(self.settings.output, os.W_OK):
            return f"the {self.output.directory_role} directory is not writable"
        if self._space_needed:
            # Room for the refused request and a margin, or (on a filesystem too small for the
            # margin) at least that request's size more than there was once its round was undone.
            free = _free_space(self.settings.output)
            if free < min(self._space_needed + _SPACE_MARGIN, self._space_free_then + self._space_needed):
                return "storage error: the disk is full"
        return None

    async def _heal(self) -> bool:
        """A recovery attempt for a readiness probe, at most one per _HEAL_EVERY seconds: probes
        from every load balancer would otherwise each run a recovery of the directory."""
        now = time.monotonic()
        if now - self._healed_at < _HEAL_EVERY:
            return False
        self._healed_at = now
        return bool(await self._on_writer(self.writer.heal))

    def _record_commits(self, committed: list[Committed]) -> None:
        for c in committed:
            self.metrics.windows.inc()
            log.info("committed %s rows=%d bytes=%d", c.name, c.rows, c.size)
        self.output.committed(len(committed))
        self._update_open_gauges()

    def _update_open_gauges(self) -> None:
        """The oldest open window's start, and the rows of every open window."""
        windows = self.writer.windows
        self.metrics.open_start.set(min(windows) / 1e9 if windows else 0)
        self.metrics.open_rows.set(sum(w.rows for w in windows.values()))

    async def _commit_open(self) -> None:
        """Commit the open windows (idle, shutdown) and publish what is committed."""
        committed = await self._on_writer(self.writer.commit_open)
        if self.output.settles:  # no more rounds may come: let what went on be removed from the directory
            await self._on_writer(self.writer.settle)
        self._record_commits(committed)
        if not self.writer.healthy and not await self._on_writer(self.writer.heal):
            raise StorageError(self.writer.problem)


def _free_space(directory: Path) -> int:
    fs = os.statvfs(directory)
    return fs.f_bavail * fs.f_frsize
