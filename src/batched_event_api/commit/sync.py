"""A commit round's I/O: write its files and its journal line, and make them durable together.

A round is written and synced in one call of the disk (LocalDisk.write_and_sync: its C twin
releases the GIL once for all of it and syncs the files side by side on threads of its own).
From `syncfs_from` files on, one syncfs() of the filesystem, once everything is written,
replaces the per-file syncs.
Writes that continue each other in one file (a group's requests appending to the open windows)
are made one write and one sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

    def run(
        self, writes: list[Write], *, journal: tuple[int, bytes, int] | None = None, directory: bool = False
    ) -> None:
        """Write `writes` (and the journal line at its offset: (fd, line, offset)) and make them
        durable, and the directory's names too when asked. A failed write stops it; every sync is
        tried and the first failed one raised."""
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
        elif self.fsync and (fds or directory):
            self.disk.write_and_sync([], fds, directory)  # side by side

    def by_filesystem(self, files: int) -> bool:
        return self.fsync and self.syncfs_from is not None and files >= self.syncfs_from


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
