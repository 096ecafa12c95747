"""The upload process's side (see process.py for the server's): the uploader (the finish stage)
on the state directory, into a bucket or a local directory, answering the server's messages, reporting what it does. Run as
`python -m batched_event_api.output.child FD ARGS` by UploadProcess."""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from batched_event_api.config import BucketUrl, Compress, Format
from batched_event_api.output.finish import Shape
from batched_event_api.output.local import LocalDirectory
from batched_event_api.output.messages import (
    AskPinned,
    Channel,
    ChildArgs,
    Drain,
    Drained,
    Pinned,
    Ready,
    Refused,
    Report,
    Stop,
    Wake,
)
from batched_event_api.output.parquet import max_row_bytes
from batched_event_api.output.partition import Partition
from batched_event_api.output.store import Store
from batched_event_api.output.uploader import Uploader, UploadReport

log = logging.getLogger("batched_event_api.upload")

_PR_SET_PDEATHSIG = 1


class _PipeReport(UploadReport):
    """The child's side of the report: results and counts gathered and sent to the server at
    most every FLUSH_EVERY seconds, one message for many uploads (each message wakes a thread
    of the server, which shares its GIL with the event loop)."""

    FLUSH_EVERY = 0.02

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
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
                self._channel.send(Report(self._counts, self._uploads, dict(self._failures)))
            self._counts, self._uploads, self._failures = None, [], collections.Counter()

    def _flush_regularly(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            self.flush()
            time.sleep(self.FLUSH_EVERY)  # what comes meanwhile goes in the next message


class _Child:
    """The child's side: the uploader, answering the server's messages."""

    def __init__(self, channel: Channel, uploader: Uploader, report: _PipeReport, pinned: queue.SimpleQueue) -> None:
        self.channel, self.uploader, self.report = channel, uploader, report
        self._pinned = pinned  # where AskPinned's answers go

    def serve(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except (EOFError, OSError):  # the server is gone: stop at once, whatever is under way
                os._exit(0)
            match message:
                case Wake():
                    self.uploader.wake()
                case Pinned(names=names):
                    self._pinned.put(frozenset(names))
                case Drain(seconds=seconds):
                    _in_background(self._drain, seconds)  # this loop must go on answering
                case Stop():
                    _in_background(self._stop)
                case _:
                    log.error("unexpected message from the server: %r", message)

    def _drain(self, seconds: float) -> None:
        done = self.uploader.drain(seconds)
        self.report.flush()  # the counts the server reports from now on are the final ones
        self.channel.send(Drained(done))

    def _stop(self) -> None:
        self.uploader.stop()
        os._exit(0)


def _in_background(work: Callable[..., None], *args: object) -> None:
    threading.Thread(target=work, args=args, daemon=True).start()


def main(fd: int, args: ChildArgs) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args.parent:  # the server died before the line above
        os._exit(0)
    os.nice(args.nice)  # uploads take the CPU that ingest leaves
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the server's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so is a SIGTERM to the group: it stops us in turn
    from batched_event_api.logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    channel = Channel(fd)
    replies: queue.SimpleQueue[frozenset[str]] = queue.SimpleQueue()

    def pinned() -> frozenset[str]:
        channel.send(AskPinned())
        return replies.get()

    report = _PipeReport(channel)
    try:
        uploader = Uploader(
            Path(args.directory),
            _store(args),
            report,
            concurrency=args.concurrency,
            pinned=pinned,
            read_whole_below=args.multipart_from,  # what goes up in one PUT is read once
            shape=Shape(
                Format(args.format),
                Compress(args.compression),
                args.header,
                Partition(args.partition) if args.partition is not None else None,
                max_row_bytes(args.max_body) if args.max_body is not None else None,
            ),
        )
        uploader.finish.claim()
    except ValueError as exc:
        channel.send(Refused(str(exc)))
        return
    channel.send(Ready())
    uploader.start()
    _Child(channel, uploader, report, replies).serve()


def _store(args: ChildArgs) -> Store:
    """The store the args name: a bucket (ValueError when its configuration is wrong), or a
    local directory."""
    if args.store.startswith("s3://"):
        from batched_event_api.output.s3 import S3Bucket  # boto3 and obstore, only for a bucket

        return S3Bucket(BucketUrl.parse(args.store), multipart_from=args.multipart_from, part_size=args.part_size)
    return LocalDirectory(Path(args.store), mode=args.file_mode)


if __name__ == "__main__":
    main(int(sys.argv[1]), msgspec.json.decode(sys.argv[2], type=ChildArgs))
