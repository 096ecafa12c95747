"""A commit round's I/O: write its files and its journal line, and make them durable together.

A round is written and synced in one call of the disk (LocalDisk.write_and_sync: its C twin
releases the GIL once for all of it and syncs the files side by side on threads of its own). From `syncfs_from` files on, one syncfs() of the filesystem, once
everything is written, replaces the per-file syncs.
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
        # For sync_all (recovery): a thread blocked in fdatasync costs nothing.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="io")

    def run(
        self, writes: list[Write], *, journal: tuple[int, bytes, int] | None = None, directory: bool = False
    ) -> None:
        """Write `writes` (and the journal line at its offset: (fd, line, offset)) and make them
        durable, and the directory's names too when asked. Raises the first OSError (nothing
        after it is tried)."""
        writes = _coalesced(writes)
        whole = self.by_filesystem(len(writes) + (journal is not None) + directory)
        # Every write, then every sync, in one call (the record last of the writes: without syncs,
        # order alone makes it the commit point). Python threads for the writes or the syncs were
        # slower, for one-event requests and for W2's 67 files alike: each hand-off and GIL retake
        # cost more than the work handed off (docs/performance.md).
        steps: list[tuple[int, int, Sequence[bytes | memoryview]]] = [(w.fd, w.check.start, w.chunks) for w in writes]
        fds = [w.fd for w in writes]
        if journal is not None:
            steps.append((journal[0], journal[2], [journal[1]]))
            fds.append(journal[0])
        per_file = self.fsync and not whole
        self.disk.write_and_sync(steps, fds if per_file else [], directory and per_file)
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
