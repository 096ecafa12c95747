"""Committed windows into a store (a bucket, or a local output directory with a finishing step),
off the request path, each exactly once.

With a store as output the writer publishes finished windows into the state directory as it
does into a plain local output directory; those files are the queue. This thread puts each one
in the store (finish.py: converted into Parquet first, under its partition, with `publish`: a
conditional create; a taken name is this window's own earlier create, known by the window id
from its file name, or another window's, and then the next free -N name) and then removes it:
a file still there is a window not known to be uploaded. So every committed window ends up in the store once, under SIGKILL or power loss at
any point (a crash between the upload and the removal, or a power cut that undoes the removal,
finds the window's own object at the next start), and the removal need not be synced: one lost to a power cut costs a HEAD at the next start, while a
directory fsync per window would share the disk with the journal's.

A window's local file stays, though uploaded, while the last journal record still names it
(`pinned`): recovery after a crash reads the last record's windows back, and an uploaded window
must not look like a write that never reached the disk.

A store outage does not stop ingest: uploads are retried with backoff, and the queue's size is
the backlog that --max-backlog bounds. So is any other failure (the state directory unreadable,
a removal refused): logged, counted by stage, retried; the thread never ends but at stop(). Only
regular files go up (opened without following a link); anything else at a window's name is
said once and left alone. The server runs the uploader in a process of its own
(process.py).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from batched_event_api.backoff import Backoff
from batched_event_api.commit.disk import LocalDisk
from batched_event_api.commit.partfiles import UPLOADED_LIST, finished_stem
from batched_event_api.config import DEFAULTS
from batched_event_api.metrics import Metrics
from batched_event_api.output.finish import Finish, Shape, Unconvertible, sha256_of
from batched_event_api.output.store import Store, StoreError

log = logging.getLogger("batched_event_api.upload")

RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds between attempts while the store (or the disk) fails
# Windows smaller than this are read into memory once, for their hash and their create (the
# bucket's --multipart-threshold: larger ones it streams from their file).
READ_WHOLE_BELOW = DEFAULTS.multipart_threshold
STAGES = {"release": "removing uploaded windows", "scan": "scanning the state directory", "upload": "upload"}

T = TypeVar("T")


class UploadReport:
    """What an uploader tells as it goes, here into the metrics; an upload process tells the
    server instead (process.py)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def uploaded(self, result: str, seconds: float) -> None:
        self.metrics.upload_duration.observe(seconds)
        self.metrics.uploads.labels(result).inc()

    def failed(self, stage: str = "upload") -> None:
        """A turn of the upload loop failed at `stage` (one of STAGES) and is retried."""
        self.metrics.upload_failures.labels(stage).inc()
        if stage == "upload":
            self.metrics.uploads.labels("failed").inc()

    def counted(self, windows: int, size: int, awaiting_release: int) -> None:
        """The backlog changed (nothing to do here: the backlog gauges read the counts)."""


class Uploader:
    def __init__(
        self,
        directory: Path,
        store: Store,
        report: UploadReport,
        *,
        concurrency: int = DEFAULTS.upload_concurrency,
        pinned: Callable[[], frozenset[str]] = frozenset,
        disk: LocalDisk | None = None,
        read_whole_below: int = READ_WHOLE_BELOW,
        shape: Shape | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.store = store
        self.finish = Finish(self.directory, store, shape or Shape(), read_whole_below=read_whole_below)
        self.report = report
        self.pinned = pinned  # windows the journal's last record names (Writer.pinned)
        self.disk = disk or LocalDisk(self.directory)  # where it removes uploaded windows
        self._queue: dict[str, int] = {}  # finished files not yet uploaded: name -> size (this thread's)
        # Uploaded, kept while pinned: name -> (st_dev, st_ino) of the file uploaded, so that only
        # that file is ever removed under the name.
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._refused: set[str] = set()  # names that are not regular files (said once each)
        # What drain() and the report read (ints: a read never sees a half-changed dict).
        self.backlog_windows = self.backlog_bytes = self.awaiting_release = 0
        self._listed: frozenset[str] | None = None  # what UPLOADED_LIST says (None: not written yet)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopped = threading.Event()
        self._hurry = threading.Event()  # ends a retry's backoff early: a drain, a stop
        self._failed = False  # an upload of the current batch failed
        self._backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
        # Windows go up side by side: a store answers each request in milliseconds, not in bandwidth.
        self._workers = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
        self._lock = threading.Lock()  # the queue, between the workers

    def start(self) -> None:
        try:
            self.finish.remove_temporaries()
        except OSError as exc:  # left for the next start: hidden, and never taken for a window
            log.warning("could not remove the conversions a crash cut short: %s", exc)
        try:
            self._scan()  # the backlog is known from the start
        except OSError:
            pass  # the thread's first turn says it, and retries
        self._thread.start()

    def wake(self) -> None:
        """Windows were published: look for them now."""
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queue to empty; True when it did."""
        try:
            self._scan()  # what was just published counts, even before the thread looks
        except OSError:
            pass  # the thread says it, and retries
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
        if self._thread.ident is not None:  # started (a test may drive turn() without the thread)
            self._thread.join()
        self._workers.shutdown(cancel_futures=True)
        if not self.backlog_windows and not self.awaiting_release:
            try:
                self.finish.release_claim()
            except OSError as exc:  # kept: the next start compares with it
                log.debug("could not remove the state directory's shape record: %s", exc)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            names = self.turn()
            if names is None:
                self._hurry.wait(self._backoff.failed())  # new windows do not cut the backoff short
                self._hurry.clear()
                continue
            self._backoff.succeeded()
            if not names:
                self._wake.wait()

    def turn(self) -> list[str] | None:
        """One turn of the loop: remove the uploaded windows no longer pinned, scan the state
        directory, upload what it holds. The windows found, or None when a stage failed (said,
        counted; the loop retries after its backoff). Each stage on its own: a removal refused
        does not hold up the uploads, nor the reverse."""
        released = self._stage("release", self._release)
        names = self._stage("scan", self._scan)
        uploaded = names is not None and self._stage("upload", lambda: self._upload_all(names))
        if released is None or uploaded is None or names is None:
            return None
        return names

    def _stage(self, stage: str, work: Callable[[], T]) -> T | None:
        """One stage of a turn; None when it failed (said, counted, retried after the backoff)."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure, and say it
            self.report.failed(stage)
            log.error(
                "%s failed, retrying in %gs (%d windows, %d bytes waiting): %s",
                STAGES[stage],
                self._backoff.delay,  # the wait _run takes next
                self.backlog_windows,
                self.backlog_bytes,
                exc,
                exc_info=not isinstance(exc, (StoreError, OSError)),
            )  # a traceback only for the unexpected
            return None

    def _scan(self) -> list[str]:
        """The finished windows in the state directory, oldest name first."""
        queue = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if finished_stem(entry.name) is None or entry.name in self._uploaded:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        self._refuse(entry.name)
                        continue
                    queue[entry.name] = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # uploaded and removed by a worker meanwhile
                    pass
        with self._lock:
            self._queue = queue
            self.backlog_bytes = sum(queue.values())
            self._count()
        return sorted(queue)

    def _refuse(self, name: str, why: str = "is not a regular file") -> None:
        """Something other than a regular file at a window's name (a symlink, a directory, a
        FIFO), or one the server may not read (another user's): the writer did not make it, so
        it is neither uploaded nor removed."""
        if name not in self._refused:
            self._refused.add(name)
            log.warning("%s in the state directory %s: not uploaded, left alone", name, why)

    def _count(self) -> None:
        """The counts the event loop reads (backlog_bytes is kept as the queue changes: a sum per
        upload would cost O(backlog) each while an outage's backlog is thousands of windows)."""
        self.backlog_windows, self.awaiting_release = len(self._queue), len(self._uploaded)
        self.report.counted(self.backlog_windows, self.backlog_bytes, self.awaiting_release)
        if self._listed != self._uploaded.keys():
            self._list_uploaded()
        if not self._queue and not self._uploaded:
            with self._idle:
                self._idle.notify_all()

    def _list_uploaded(self) -> None:
        """Rewrite UPLOADED_LIST (under the lock), so that `status` does not count an uploaded
        window the journal still keeps as waiting; removed when empty. Advisory: a failure is
        only logged, and a list a crash left is replaced at the next start. Written beside
        self.disk, not through it: that seam carries the windows' files, which its doubles fail."""
        names = frozenset(self._uploaded)
        path, temporary = self.directory / UPLOADED_LIST, self.directory / (UPLOADED_LIST + ".tmp")
        try:
            if not names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)  # whatever is there (a link is removed, never written through)
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write("".join(name + "\n" for name in sorted(names)))
                os.replace(temporary, path)
        except OSError as exc:
            log.debug("could not write %s: %s", UPLOADED_LIST, exc)
            return
        self._listed = names

    def _upload_all(self, names: list[str]) -> bool:
        """Upload these windows side by side; the first failure raised once all are done."""
        self._failed = False
        outcomes = [self._workers.submit(self._upload, name) for name in names]
        errors = [e for e in (outcome.exception() for outcome in outcomes) if e is not None]  # all done
        if errors:
            raise errors[0]
        return True

    def _upload(self, name: str) -> None:
        if self._stopped.is_set() or self._failed:  # after a failure the rest of the batch waits for the retry
            return
        try:
            self._upload_one(name)
        except BaseException:
            self._failed = True
            raise

    def _upload_one(self, name: str) -> None:
        try:  # never through a link: only the regular file at the name goes up
            fd, info = self.disk.open_read(name)
        except FileNotFoundError:
            log.warning("%s left the state directory before its upload (removed by someone else)", name)
            self._forget(name)
            return
        except PermissionError:  # tried again at each turn, holding up no other window
            self._refuse(name, "is a file the server may not read")
            self._forget(name)
            return
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EINVAL):  # a symlink, or not a regular file
                raise
            self._refuse(name)
            self._forget(name)
            return
        with os.fdopen(fd, "rb") as f:
            try:
                self._upload_file(name, f, info.st_size)
            except Unconvertible as exc:  # kept, tried again at each turn, holding up no other window
                self._refuse(name, str(exc))
                self._forget(name)
                return
            self._uploaded_now(name, (info.st_dev, info.st_ino))

    def _upload_file(self, name: str, f: BinaryIO, size: int) -> None:
        started = time.perf_counter()
        target, result = self.finish.put(name, f, size)  # the store's name: the local -N and id dropped
        self.report.uploaded(result, time.perf_counter() - started)
        log.info("uploaded %s as %s%s (%s)", name, self.store.url, target, result)

    def _forget(self, name: str) -> None:
        """No window to upload under this name (gone, or not a regular file)."""
        with self._lock:
            self.backlog_bytes -= self._queue.pop(name, 0)
            self._count()

    def _uploaded_now(self, name: str, file: tuple[int, int]) -> None:
        """The object exists: the local copy goes after the batch (the next turn of _run), or
        once the journal stops naming it."""
        with self._lock:
            self.backlog_bytes -= self._queue.pop(name, 0)
            self._uploaded[name] = file
            self._count()

    def _release(self) -> bool:
        """Remove the uploaded windows no longer pinned (not synced: a removal a power cut undoes
        uploads the window again, recognised as its own). An OSError leaves the rest for the retry."""
        if not self._uploaded:
            return True
        pinned = self.pinned()
        with self._lock:
            free = [(name, file) for name, file in self._uploaded.items() if name not in pinned]
        for name, file in free:
            self._remove(name, file)
            with self._lock:
                self._uploaded.pop(name, None)
                self._count()
        return True

    def _remove(self, name: str, file: tuple[int, int]) -> None:
        """Remove the uploaded file under `name`, and only it: a file already gone is done."""
        try:
            info = os.lstat(self.directory / name)
        except FileNotFoundError:
            log.info("%s was removed by someone else after its upload", name)
            return
        if (info.st_dev, info.st_ino) != file:
            log.warning("%s is no longer the file uploaded under that name: left alone", name)
            return
        try:
            self.disk.remove(name)
        except FileNotFoundError:
            log.info("%s was removed by someone else after its upload", name)


def _sha256(path: Path | str) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)
