"""A commit round's I/O: write its files and its journal line, and make them durable together.

A round under 1 MiB is written and synced on the calling thread in one call of the disk
(LocalDisk.write_and_sync: its C twin releases the GIL once for all of it). A round of 1 MiB or
more has each file written and synced on its own thread while the journal line is written. From `syncfs_from` files
on, one syncfs() of the filesystem, once everything is written, replaces the per-file syncs.
Writes that continue each other in one file (a group's requests appending to the open windows)
are made one write and one sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from batched_event_api.commit.disk import LocalDisk
from batched_event_api.commit.journal import Check

SYNCFS_FROM = 8  # files in one round from which one syncfs() replaces their fdatasyncs
_PARALLEL_WRITES = int(
    __import__("os").environ.get("PW", 1 << 20)
)  # bytes per round from which its files are written side by side


@dataclass(slots=True)
class Write:
    """Chunks to write into one file at `check.start`; `check` names what the record will say."""

    fd: int
    chunks: list[memoryview]
    check: Check


class SyncRound:
    def __init__(self, disk: LocalDisk, *, fsync: bool, syncfs_from: int | None = SYNCFS_FROM) -> None:
        self.disk = disk
        self.fsync = fsync
        # None: never syncfs (asked for, or the kernel lacks a syncfs that reports errors).
        self.syncfs_from = syncfs_from if disk.has_syncfs else None
        # A thread blocked in fdatasync costs nothing; 32 keep many-file rounds side by side.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="io")

    def run(
        self, writes: list[Write], *, journal: tuple[int, bytes, int] | None = None, directory: bool = False
    ) -> None:
        """Write `writes` (and the journal line at its offset: (fd, line, offset)) and make them
        durable, and the directory's names too when asked. Raises the first OSError, after every
        thread is done."""
        fds = [journal[0]] if journal is not None else []
        writes = _coalesced(writes)
        whole = self.by_filesystem(len(writes) + len(fds) + directory)
        if sum(w.check.end - w.check.start for w in writes) < _PARALLEL_WRITES:
            # Every write, then every sync, in one call, one after another (the record last of
            # the writes: without syncs, order alone makes it the commit point). Side by side on
            # threads the syncs were slower: each hand-off and GIL retake cost more than a second
            # fdatasync, which finds the first one's journal commit done.
            steps: list[tuple[int, int, Sequence[bytes | memoryview]]] = [
                (w.fd, w.check.start, w.chunks) for w in writes
            ]
            if journal is not None:
                steps.append((journal[0], journal[2], [journal[1]]))
            per_file = self.fsync and not whole
            self.disk.write_and_sync(steps, [w.fd for w in writes] + fds if per_file else [], directory and per_file)
        else:
            tasks = [self._pool.submit(self._write_one, w, self.fsync and not whole) for w in writes]
            try:
                if journal is not None:
                    if not self.fsync:  # with no syncs, order alone makes the record the commit point
                        _wait_all(tasks)
                        tasks = []
                    self.disk.write(journal[0], [journal[1]], journal[2])
                if not whole:
                    self.sync_all(fds, directory=directory)
            finally:
                _wait_all(tasks)
        if whole:
            self.disk.sync_filesystem()

    def sync_files(self, fds: list[int], *, directory: bool = False) -> None:
        """Make these files (and the directory's names) durable: per file or one syncfs."""
        if self.by_filesystem(len(fds) + directory):
            self.disk.sync_filesystem()
        else:
            self.sync_all(fds, directory=directory)

    def sync_all(self, fds: list[int], *, directory: bool = False) -> None:
        """fdatasync the files (and fsync the directory) side by side."""
        if not self.fsync:
            return
        syncs = [partial(self.disk.sync_data, fd) for fd in fds] + ([self.disk.sync_directory] if directory else [])
        if not syncs:
            return
        others = [self._pool.submit(sync) for sync in syncs[1:]]
        try:
            syncs[0]()  # one on this thread: a hand-off less
        finally:
            _wait_all(others)

    def by_filesystem(self, files: int) -> bool:
        return self.fsync and self.syncfs_from is not None and files >= self.syncfs_from

    def close(self) -> None:
        self._pool.shutdown()

    def _write_one(self, w: Write, sync: bool) -> None:
        self.disk.write(w.fd, w.chunks, w.check.start)
        if sync:
            self.disk.sync_data(w.fd)


def _coalesced(writes: list[Write]) -> list[Write]:
    """Writes that continue each other in one file, as one, also when writes to other files come
    between them (a group's requests each appending to several open windows): for the I/O only,
    the record keeps each request's own check. Files are written in any order before the record."""
    out: list[Write] = []
    last: dict[int, Write] = {}  # each file's latest write in `out`
    for w in writes:
        before = last.get(w.fd)
        if before is not None and before.check.end == w.check.start:
            before.chunks.extend(w.chunks)
            before.check = Check(before.check.name, before.check.start, w.check.end, 0)
        else:
            last[w.fd] = Write(w.fd, list(w.chunks), w.check)
            out.append(last[w.fd])
    return out


def _wait_all(futures: list) -> None:
    """Wait for every future, then raise the first error among them."""
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
