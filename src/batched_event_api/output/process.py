"""The uploader (the finish stage: [convert to Parquet] -> store -> release) in a process of its
own, so that uploads and conversions share no GIL with the event loop.

Each upload takes CPU (reading and hashing the window, the PUT, the thread hand-offs: figures in
docs/performance.md); in the server's process that time was taken from the event loop at every
window. The child (child.py) runs the same `Uploader` on the same state directory and talks to
the server over one socket pair, in the typed messages of messages.py.

The windows the journal's last record names (`pinned`) are asked of the server at the moment the
child would remove uploaded files, never cached: a stale answer is how an uploaded window's file
could vanish under recovery. The child dies with the server (PR_SET_PDEATHSIG, and at the end of
its socket), so it never removes files under a restarted server; if it dies alone, the server
starts another, which finds the same files and goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import msgspec

from batched_event_api.metrics import Metrics
from batched_event_api.output.messages import (
    AskPinned,
    Channel,
    ChildArgs,
    Drain,
    Drained,
    Message,
    Pinned,
    Ready,
    Refused,
    Report,
    Stop,
    Wake,
)
from batched_event_api.output.uploader import UploadReport

log = logging.getLogger("batched_event_api.upload")

RESTART_AFTER = 1.0  # seconds before a child that died alone is replaced
_STOP_GRACE = 2.0  # seconds the stopped child has to finish what it does before it is killed


class UploadProcess:
    """The server's side: what `Uploader` offers the server, served by a child process."""

    def __init__(
        self,
        args: ChildArgs,
        metrics: Metrics,
        *,
        pinned: Callable[[], frozenset[str]],
    ) -> None:
        """`args`: what the child is started with (its `parent` is set here)."""
        self.report = UploadReport(metrics)
        self.pinned = pinned
        self._args = msgspec.structs.replace(args, parent=os.getpid())
        self.backlog_windows = self.backlog_bytes = self.awaiting_release = 0
        self._channel: Channel | None = None
        self._proc: subprocess.Popen | None = None
        self._send_lock = threading.Lock()
        self._drain_reply: queue.SimpleQueue[bool | None] | None = None  # where the drain under way hears back
        self._stopping = threading.Event()
        self._running = threading.Event()  # a child is up (cleared from its end to its replacement's start)
        self._reader: threading.Thread | None = None
        # Wakes go out from a thread of their own, many coalesced into one: a child that reads
        # nothing (stopped, frozen) fills the socket, and a send would then block the caller,
        # the event loop.
        self._woken = threading.Event()

    def start(self) -> None:
        """Start the child and wait until it runs: ValueError when the store's configuration is
        wrong, RuntimeError when the child could not start."""
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="upload-process", daemon=True)
        self._reader.start()
        threading.Thread(target=self._send_wakes, name="upload-wake", daemon=True).start()

    def wake(self) -> None:
        self._woken.set()

    def _send_wakes(self) -> None:
        while True:
            self._woken.wait()
            self._woken.clear()
            if self._stopping.is_set():
                return
            self._send(Wake())

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the child's queue to empty; True when it did. A child
        that dies meanwhile is waited for and asked again."""
        deadline = time.monotonic() + timeout
        while True:
            reply: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
            self._drain_reply = reply
            try:
                if self._send(Drain(max(0.0, deadline - time.monotonic()))):
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
        self._woken.set()  # the wake thread ends
        self._send(Stop())
        if self._reader is not None:  # it ends when the child does (a replacement under way is stopped too)
            # Not for a request under way (up to its 60 s timeout when the store hangs): the drain
            # had its --drain-timeout, and a PUT cut short is safe, as an object it did create is
            # recognised by its window id at the next start.
            self._reader.join(timeout=_STOP_GRACE)
        with self._send_lock:
            proc, channel = self._proc, self._channel
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if channel is not None:
            channel.close()

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batched_event_api.output.child",
                str(theirs.fileno()),
                msgspec.json.encode(self._args).decode(),
            ],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        channel = Channel(ours.detach())
        try:
            first = channel.recv()
        except EOFError:
            channel.close()
            raise RuntimeError(f"the upload process exited with status {proc.wait()}") from None
        if not isinstance(first, Ready):
            channel.close()
            proc.wait()
            if isinstance(first, Refused):  # the store's configuration
                raise ValueError(first.text)
            raise RuntimeError(f"the upload process said {first!r} before it was ready")
        with self._send_lock:  # the event loop never waits for a child to start
            self._proc, self._channel = proc, channel
        self._running.set()

    def _send(self, message: Message) -> bool:
        with self._send_lock:
            try:
                assert self._channel is not None
                self._channel.send(message)
                return True
            except (OSError, ValueError):  # the child is gone (or being replaced)
                self._running.clear()
                return False

    def _read(self) -> None:
        while True:
            try:
                message = self._channel.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                self._running.clear()
                if self._stopping.is_set() or not self._replace():
                    if self._proc is not None:
                        self._proc.wait()
                    return
                continue
            self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        match message:
            case AskPinned():
                self._send(Pinned(sorted(self.pinned())))
            case Report(counts=counts, uploads=uploads, failures=failures):
                if counts is not None:
                    self.backlog_windows, self.backlog_bytes, self.awaiting_release = counts
                for result, seconds in uploads:
                    self.report.uploaded(result, seconds)
                for stage, count in failures.items():
                    for _ in range(count):
                        self.report.failed(stage)
            case Drained(ok=ok):
                if (reply := self._drain_reply) is not None:
                    reply.put(ok)
            case _:
                log.error("unexpected message from the upload process: %r", message)

    def _replace(self) -> bool:
        """The child died alone: say so and start another (False once the server stops)."""
        with self._send_lock:
            if self._channel is not None:
                self._channel.close()
        status = self._proc.wait() if self._proc else None
        log.error("the upload process exited (status %s); starting another in %gs", status, RESTART_AFTER)
        if (reply := self._drain_reply) is not None:
            reply.put(None)  # a drain under way will not hear from this child: it asks the next
        while not self._stopping.wait(RESTART_AFTER):
            try:
                self._spawn()
                if self._stopping.is_set():  # stop() came while it started
                    self._send(Stop())
                    return True  # _read sees it end
                self._send(Wake())  # windows published while no child listened
                return True
            except (ValueError, RuntimeError, OSError) as exc:
                log.error("could not start the upload process: %s", exc)
        return False
