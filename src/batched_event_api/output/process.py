"""The uploader in a process of its own, so that uploads share no GIL with the event loop.

Each upload costs about a millisecond of CPU (reading and hashing the window, the PUT, the thread
hand-offs); in the server's process that time was taken from the event loop at every window.
The child runs the same `Uploader` on the same state directory and talks to the server over one
socket pair, in small messages:

    server -> child   ("wake",)  ("pinned", names)  ("drain", seconds)  ("stop",)
    child -> server   ("ready",)  ("error", text)  ("pinned?",)  ("drained", ok)
                      ("report", (windows, bytes, awaiting release) or None, [(result, seconds)],
                       {stage: failures})

The windows the journal's last record names (`pinned`) are asked of the server at the moment the
child would remove uploaded files, never cached: a stale answer is how an uploaded window's file
could vanish under recovery. The child dies with the server (PR_SET_PDEATHSIG, and at the end of
its socket), so it never removes files under a restarted server; if it dies alone, the server
starts another, which finds the same files and goes on.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from batched_event_api.config import BucketUrl
from batched_event_api.metrics import Metrics
from batched_event_api.output.uploader import Uploader, UploadReport

log = logging.getLogger("batched_event_api.upload")

RESTART_AFTER = 1.0  # seconds before a child that died alone is replaced
_STOP_GRACE = 2.0  # seconds the stopped child has to finish what it does before it is killed
_PR_SET_PDEATHSIG = 1


class UploadProcess:
    """The server's side: what `Uploader` offers the server, served by a child process."""

    def __init__(
        self,
        directory: Path,
        bucket: BucketUrl,
        metrics: Metrics,
        *,
        concurrency: int,
        nice: int,
        multipart_from: int,
        part_size: int,
        pinned: Callable[[], frozenset[str]],
        log_format: str,
        log_level: str,
    ) -> None:
        self.report = UploadReport(metrics)
        self.pinned = pinned
        self._args = {
            "directory": str(directory),
            "bucket": str(bucket),
            "concurrency": concurrency,
            "nice": nice,
            "multipart_from": multipart_from,
            "part_size": part_size,
            "log_format": log_format,
            "log_level": log_level,
        }
        self.backlog_windows = self.backlog_bytes = self.awaiting_release = 0
        self._conn: Connection | None = None
        self._proc: subprocess.Popen | None = None
        self._send_lock = threading.Lock()
        self._drain_reply: queue.SimpleQueue[bool | None] | None = None  # where the drain under way hears back
        self._stopping = threading.Event()
        self._running = threading.Event()  # a child is up (cleared from its end to its replacement's start)
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Start the child and wait until it runs: ValueError when the bucket's configuration is
        wrong, RuntimeError when the child could not start."""
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="upload-process", daemon=True)
        self._reader.start()

    def wake(self) -> None:
        self._send(("wake",))

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the child's queue to empty; True when it did. A child
        that dies meanwhile is waited for and asked again."""
        deadline = time.monotonic() + timeout
        while True:
            reply: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
            self._drain_reply = reply
            try:
                if self._send(("drain", max(0.0, deadline - time.monotonic()))):
                    done = reply.get(timeout=max(0.0, deadline - time.monotonic()) + 5)
                    if done is not None:
                        return done
            except queue.Empty:
                return False
            finally:
                self._drain_reply = None
            if not self._running.wait(max(0.0, deadline - time.monotonic())) or time.monotonic() >= deadline:
                return False

    def stop(self) -> None:
        self._stopping.set()
        self._send(("stop",))
        if self._reader is not None:  # it ends when the child does (a replacement under way is stopped too)
            # Not for a request under way (up to its 60 s timeout when the store hangs): the drain
            # had its --drain-timeout, and a PUT cut short is safe, as an object it did create is
            # recognised by its window id at the next start.
            self._reader.join(timeout=_STOP_GRACE)
        with self._send_lock:
            proc, conn = self._proc, self._conn
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        args = json.dumps({**self._args, "parent": os.getpid()})
        proc = subprocess.Popen(
            [sys.executable, "-m", "batched_event_api.output.process", str(theirs.fileno()), args],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        conn = Connection(ours.detach())
        try:
            first = conn.recv()
        except EOFError:
            first = ("exited", f"the upload process exited with status {proc.wait()}")
        if first[0] != "ready":
            conn.close()
            proc.wait()
            raise (ValueError if first[0] == "error" else RuntimeError)(first[1])  # error: the bucket's configuration
        with self._send_lock:  # the event loop never waits for a child to start
            self._proc, self._conn = proc, conn
        self._running.set()

    def _send(self, message: tuple) -> bool:
        with self._send_lock:
            try:
                assert self._conn is not None
                self._conn.send(message)
                return True
            except (OSError, ValueError):  # the child is gone (or being replaced)
                self._running.clear()
                return False

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                self._running.clear()
                if self._stopping.is_set() or not self._replace():
                    if self._proc is not None:
                        self._proc.wait()
                    return
                continue
            kind = message[0]
            if kind == "pinned?":
                self._send(("pinned", sorted(self.pinned())))
            elif kind == "report":
                counts, uploads, failures = message[1:]
                if counts is not None:
                    self.backlog_windows, self.backlog_bytes, self.awaiting_release = counts
                for result, seconds in uploads:
                    self.report.uploaded(result, seconds)
                for stage, count in failures.items():
                    for _ in range(count):
                        self.report.failed(stage)
            elif kind == "drained" and (reply := self._drain_reply) is not None:
                reply.put(message[1])

    def _replace(self) -> bool:
        """The child died alone: say so and start another (False once the server stops)."""
        with self._send_lock:
            if self._conn is not None:
                self._conn.close()
        status = self._proc.wait() if self._proc else None
        log.error("the upload process exited (status %s); starting another in %gs", status, RESTART_AFTER)
        if (reply := self._drain_reply) is not None:
            reply.put(None)  # a drain under way will not hear from this child: it asks the next
        while not self._stopping.wait(RESTART_AFTER):
            try:
                self._spawn()
                if self._stopping.is_set():  # stop() came while it started
                    self._send(("stop",))
                    return True  # _read sees it end
                self._send(("wake",))  # windows published while no child listened
                return True
            except (ValueError, RuntimeError, OSError) as exc:
                log.error("could not start the upload process: %s", exc)
        return False


class _PipeReport(UploadReport):
    """The child's side of the report: results and counts gathered and sent to the server at
    most every FLUSH_EVERY seconds, one message for many uploads (each message wakes a thread
    of the server, which shares its GIL with the event loop)."""

    FLUSH_EVERY = 0.02

    def __init__(self, send: Callable[[tuple], None]) -> None:
        self._tell = send
        self._lock = threading.Lock()
        self._counts: tuple[int, int, int] | None = None
        self._uploads: list[tuple[str, float]] = []
        self._failures: collections.Counter[str] = collections.Counter()
        self._due = threading.Event()
        threading.Thread(target=self._flush_regularly, name="report", daemon=True).start()

    def uploaded(self, result: str, seconds: float) -> None:
        with self._lock:
            self._uploads.append((result, seconds))
        self._due.set()

    def failed(self, stage: str = "upload") -> None:
        with self._lock:
            self._failures[stage] += 1
        self._due.set()

    def counted(self, windows: int, size: int, awaiting_release: int) -> None:
        with self._lock:
            self._counts = (windows, size, awaiting_release)
        self._due.set()

    def flush(self) -> None:
        with self._lock:  # held while telling: a later snapshot never arrives before an earlier one
            if (self._counts, self._uploads, self._failures) != (None, [], {}):
                self._tell(("report", self._counts, self._uploads, dict(self._failures)))
            self._counts, self._uploads, self._failures = None, [], collections.Counter()

    def _flush_regularly(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            self.flush()
            time.sleep(self.FLUSH_EVERY)  # what comes meanwhile goes in the next message


def _child(fd: int, args: dict[str, Any]) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args["parent"]:  # the server died before the line above
        os._exit(0)
    os.nice(args["nice"])  # uploads take the CPU that ingest leaves
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the server's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so is a SIGTERM to the group: it stops us in turn
    from batched_event_api.logs import configure_logging
    from batched_event_api.output.s3 import S3Bucket

    configure_logging(args["log_format"], args["log_level"])
    conn = Connection(fd)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    replies: queue.SimpleQueue[frozenset[str]] = queue.SimpleQueue()

    def pinned() -> frozenset[str]:
        send(("pinned?",))
        return replies.get()

    report = _PipeReport(send)
    try:
        bucket = S3Bucket(
            BucketUrl.parse(args["bucket"]), multipart_from=args["multipart_from"], part_size=args["part_size"]
        )
        uploader = Uploader(Path(args["directory"]), bucket, report, concurrency=args["concurrency"], pinned=pinned)
    except ValueError as exc:
        send(("error", str(exc)))
        return
    send(("ready",))
    uploader.start()

    def in_background(work: Callable[[], None]) -> None:
        threading.Thread(target=work, daemon=True).start()  # the loop below must go on answering

    def drained(done: bool) -> None:
        report.flush()  # the counts the server reports from now on are the final ones
        send(("drained", done))

    def stop() -> None:
        uploader.stop()
        os._exit(0)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server is gone: stop at once, whatever is under way
            os._exit(0)
        kind = message[0]
        if kind == "wake":
            uploader.wake()
        elif kind == "pinned":
            replies.put(frozenset(message[1]))
        elif kind == "drain":
            in_background(lambda timeout=message[1]: drained(uploader.drain(timeout)))
        elif kind == "stop":
            in_background(stop)


if __name__ == "__main__":
    _child(int(sys.argv[1]), json.loads(sys.argv[2]))
