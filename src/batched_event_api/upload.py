"""Committed windows into the bucket, off the request path, each exactly once.

With a bucket as output the writer publishes finished windows into the state directory as it
does into a local output directory; those files are the upload queue. This thread uploads each
one with a conditional create and then removes it: a file still there is a window not known to
be uploaded. A name already taken in the bucket is either this window's own earlier upload (a
crash came between the upload and the removal, or a power cut undid the removal: same size and
SHA-256 in its metadata), and then it is done, or another window's (another instance's, for the
same five minutes), and then the window takes the next free -N name, as local publishing does. So
every committed window ends up in the bucket once, under SIGKILL or power loss at any point, and
the removal need not be synced: one lost to a power cut costs a HEAD at the next start, while a
directory fsync per window would share the disk with the journal's.

A window's local file stays, though uploaded, while the last journal record still names it
(`pinned`): recovery after a crash reads the last record's windows back, and an uploaded window
must not look like a write that never reached the disk.

A store outage does not stop ingest: uploads are retried with backoff, and the queue's size is
the backlog that --max-backlog bounds. The server runs the uploader in a process of its own
(upload_process.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path

from .metrics import Metrics
from .objectstore import Identity, S3Bucket, StoreError
from .partfiles import finished_stem, names_from
from .storage import LocalDisk

log = logging.getLogger("batched_event_api.upload")

RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds between attempts while the store fails


class UploadReport:
    """What an uploader tells as it goes, here into the metrics; an upload process tells the
    server instead (upload_process.py)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def uploaded(self, result: str, seconds: float) -> None:
        self.metrics.upload_duration.observe(seconds)
        self.metrics.uploads.labels(result).inc()

    def failed(self) -> None:
        self.metrics.uploads.labels("failed").inc()

    def counted(self, windows: int, size: int, awaiting_release: int) -> None:
        """The backlog changed (nothing to do here: the backlog gauges read the counts)."""


class Uploader:
    def __init__(self, directory: Path, bucket: S3Bucket, report: UploadReport, *, concurrency: int = 4,
                 pinned: Callable[[], frozenset[str]] = frozenset, disk: LocalDisk | None = None) -> None:
        self.directory = Path(directory)
        self.bucket = bucket
        self.report = report
        self.pinned = pinned  # windows the journal's last record names (Writer.pinned)
        self.disk = disk or LocalDisk(self.directory)  # where it removes uploaded windows
        self._queue: dict[str, int] = {}  # finished files not yet uploaded: name -> size (this thread's)
        self._uploaded: set[str] = set()  # uploaded, kept while pinned
        # What drain() and the report read (ints: a read never sees a half-changed dict).
        self.backlog_windows = self.backlog_bytes = self.awaiting_release = 0
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopped = threading.Event()
        self._hurry = threading.Event()  # ends a retry's backoff early: a drain, a stop
        self._failed = False  # an upload of the current batch failed
        self._retry = RETRY_FIRST
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
        # Windows go up side by side: a store answers each request in milliseconds, not in bandwidth.
        self._workers = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
        self._lock = threading.Lock()  # the queue, between the workers

    def start(self) -> None:
        self._scan()
        self._thread.start()

    def wake(self) -> None:
        """Windows were published: look for them now."""
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queue to empty; True when it did."""
        self._scan()  # what was just published counts, even before the thread looks
        self.wake()
        self._hurry.set()  # a shutdown tries the store now, not after the current backoff
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.backlog_windows or self.awaiting_release:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        self._stopped.set()
        self._hurry.set()
        self._wake.set()
        self._thread.join()
        self._workers.shutdown(cancel_futures=True)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            self._release()
            names = self._scan()
            self._failed = False
            try:
                outcomes = [self._workers.submit(self._upload, name) for name in names]
                errors = [e for e in (outcome.exception() for outcome in outcomes) if e is not None]  # all done
                if errors:
                    raise errors[0]
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure, and say it
                self.report.failed()
                log.error("upload failed, retrying in %gs (%d windows, %d bytes waiting): %s",
                          self._retry, self.backlog_windows, self.backlog_bytes, exc,
                          exc_info=not isinstance(exc, (StoreError, OSError)))  # a traceback only for the unexpected
                self._hurry.wait(self._retry)  # new windows do not cut the backoff short
                self._hurry.clear()
                self._retry = min(self._retry * 2, RETRY_MAX)
                continue
            self._retry = RETRY_FIRST
            if not names:
                self._wake.wait()

    def _scan(self) -> list[str]:
        """The finished windows in the state directory, oldest name first."""
        queue = {}
        for entry in os.scandir(self.directory):
            if finished_stem(entry.name) is not None and entry.name not in self._uploaded:
                try:
                    queue[entry.name] = entry.stat().st_size
                except FileNotFoundError:  # uploaded and removed by a worker meanwhile
                    pass
        with self._lock:
            self._queue = queue
            self.backlog_bytes = sum(queue.values())
            self._count()
        return sorted(queue)

    def _count(self) -> None:
        """The counts the event loop reads (backlog_bytes is kept as the queue changes: a sum per
        upload would cost O(backlog) each while an outage's backlog is thousands of windows)."""
        self.backlog_windows, self.awaiting_release = len(self._queue), len(self._uploaded)
        self.report.counted(self.backlog_windows, self.backlog_bytes, self.awaiting_release)
        if not self._queue and not self._uploaded:
            with self._idle:
                self._idle.notify_all()

    def _upload(self, name: str) -> None:
        if self._stopped.is_set() or self._failed:  # after a failure the rest of the batch waits for the retry
            return
        try:
            self._upload_one(name)
        except BaseException:
            self._failed = True
            raise

    def _upload_one(self, name: str) -> None:
        path = self.directory / name
        size = path.stat().st_size
        # Below the multipart threshold the file is read once, for its hash and for its PUT.
        data = path.read_bytes() if size < self.bucket.multipart_from else None
        digest = hashlib.sha256(data).hexdigest() if data is not None else _sha256(path)
        stem, suffix = finished_stem(name)  # type: ignore[misc]  # _scan took only finished names
        encoding = "gzip" if suffix.endswith(".gz") else None
        started = time.perf_counter()
        for n, target in enumerate(names_from(stem, suffix)):  # the bucket's name: the local -N dropped
            if self.bucket.create(target, str(path), data, sha256=digest, content_type="text/csv",
                                  content_encoding=encoding):
                result = "created" if n == 0 else "next_name"
                break
            if self.bucket.identity(target) == Identity(size, digest):
                result = "already_there"  # this window's own upload, before a crash
                break
        self.report.uploaded(result, time.perf_counter() - started)
        log.info("uploaded %s as %s%s (%s)", name, self.bucket.url, target, result)
        self._uploaded_now(name)

    def _uploaded_now(self, name: str) -> None:
        """The object exists: the local copy goes after the batch (the next turn of _run), or
        once the journal stops naming it."""
        with self._lock:
            self.backlog_bytes -= self._queue.pop(name, 0)
            self._uploaded.add(name)
            self._count()

    def _release(self) -> None:
        """Remove the uploaded windows no longer pinned (not synced: a removal a power cut undoes
        uploads the window again, recognised as its own)."""
        if not self._uploaded:
            return
        pinned = self.pinned()
        with self._lock:
            free = [name for name in self._uploaded if name not in pinned]
        for name in free:
            self.disk.remove(name)
        with self._lock:
            self._uploaded.difference_update(free)
            self._count()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

