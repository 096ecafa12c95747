"""Where a commit round's rows go: appended to the open windows' part files, or written to new part
files for the windows its requests open (and, with --max-file-bytes, the files that roll over);
each write with the CRC recovery checks it by."""

from __future__ import annotations

import bisect
import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zstandard

from batched_event_api.commit.journal import Check, OpenFile
from batched_event_api.commit.partfiles import PartFiles
from batched_event_api.commit.sync import SyncRound, Write
from batched_event_api.commit.windows import Plan, StrictWindows
from batched_event_api.config import Compress

if TYPE_CHECKING:
    from batched_event_api.events.rows import Rows

# A write of more chunks than this (rows of requests spread over several windows, often one row
# each), of at most _JOIN_BYTES, is joined into one buffer first: one copy is cheaper than a CRC
# call and an iovec per row (large requests' chunks are written as they are, never copied).
_JOIN_FROM = 16
_JOIN_BYTES = 1 << 20
# A round spanning more windows than this has its part files written, synced and closed in batches.
OPEN_PARTS_PER_ROUND = 256


@dataclass(frozen=True, slots=True)
class Committed:
    name: str
    rows: int
    size: int


@dataclass(slots=True)
class RoundState:
    """The writer's state as a round's requests are placed; installed only once its record is
    durable. Its window records are replaced, never changed in place: the writer's stay as they
    were when the round fails."""

    windows: dict[int, OpenFile]  # the open windows by start, in the order they were opened
    fds: dict[int, int]  # their part files' descriptors
    publish: list[str]
    taken: set[str]  # names no new window may take: the open ones, those to publish, this round's
    watermark: int | None = None  # strict windows: the greatest event time accepted
    created: list[int] = field(default_factory=list)  # part files created this round (descriptors)
    writes: list[Write] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    # Each file's latest write still to be written this round, and its check's index in `checks`.
    last_write: dict[int, tuple[Write, int]] = field(default_factory=dict)
    # Rows placed for a window's file and not yet made a write (its chunks, their rows): one write
    # and one check per file and round, however many of the round's requests reach it.
    pending: dict[int, tuple[list[memoryview], int]] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # Idempotency-Keys applied this round
    key_bytes: int = 0  # what they will cost the key store
    events: int = 0

    @property
    def newest(self) -> OpenFile | None:
        """The window opened last: the one open window of the first-event policy."""
        return next(reversed(self.windows.values()), None)


def _identity(data: bytes) -> bytes:
    return data


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _encoder(compress: Compress) -> Callable[[bytes], bytes]:
    """How one write's bytes are encoded. Compressed files get one gzip member or one zstd frame
    per write: concatenated members (frames) are one valid stream, so appending and truncating
    at a recorded size keep the file readable."""
    if compress is Compress.NONE:
        return _identity
    if compress is Compress.GZIP:
        return _gzip
    if compress is Compress.ZSTD:
        # One compressor for the writer's thread (not shared across threads), its context reused.
        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress
    raise ValueError(f"CSV files are not compressed with {compress}")


class Placement:
    def __init__(
        self,
        parts: PartFiles,
        sync: SyncRound,
        *,
        header: bytes,
        compress: Compress,
        max_file_bytes: int | None = None,
    ) -> None:
        self.parts = parts
        self.sync = sync
        self.header = header
        self._encode = _encoder(compress)
        self.plain = self._encode is _identity  # rows written as they are (not gzip, zstd)
        self.max_file_bytes = max_file_bytes

    def retire(self, state: RoundState, starts: list[int], max_open: int | None) -> list[Committed]:
        """Before a round's requests: commit the recovered windows the writer cannot continue
        (`starts`), then the oldest while more than `max_open` are open (the cap was lowered)."""
        closed = [self._close(state, start) for start in starts if start in state.windows]
        while max_open is not None and len(state.windows) > max_open:
            closed.append(self._close(state, min(state.windows)))
        return closed

    def place_segments(self, plan: Plan, rows: Rows, state: RoundState) -> list[Committed]:
        """Where one request's rows go under the first-event policy, against the round's state so
        far: adds the writes and checks to the round, moves its open window on, and returns the
        windows the request closes."""
        closed: list[Committed] = []
        for index, segment in enumerate(plan.segments):
            if not (index == 0 and plan.continues_open):
                if (open_window := state.newest) is not None:
                    closed.append(self._close(state, open_window.start))
                if segment.window_start in state.windows:  # left open by strict windows before a restart
                    closed.append(self._close(state, segment.window_start))
            self._append(state, segment.window_start, [(segment.first, segment.stop)], rows, closed)
        return closed

    def place_groups(
        self, policy: StrictWindows, groups: dict[int, list[tuple[int, int]]], last: int, rows: Rows, state: RoundState
    ) -> tuple[list[Committed], int]:
        """Where one request's rows go under strict windows: each window's rows, in arrival order,
        to its open file, or a new one (commits the oldest open window first when --max-open-windows
        are open; a late file when the watermark has passed the window). Then the watermark moves
        to `last` (the request's greatest time) and commits the windows it passes. Returns the
        windows committed and the events that went to late files."""
        closed: list[Committed] = []
        late = 0
        for start, runs in groups.items():
            window = state.windows.get(start)
            if window is None:
                while len(state.windows) >= policy.max_open:
                    closed.append(self._close(state, min(state.windows)))
                is_late = policy.passed(start, state.watermark)
            else:
                is_late = window.late
            if is_late:
                late += sum(stop - first for first, stop in runs)
            self._append(state, start, runs, rows, closed, late=is_late)
        if state.watermark is None or last > state.watermark:
            state.watermark = last
            passed = sorted(s for s, w in state.windows.items() if not w.late and policy.passed(s, last))
            closed += [self._close(state, start) for start in passed]
        return closed, late

    def flush(self, state: RoundState) -> None:
        """Every window's rows placed this round and not yet written become its write (before the
        round's record is made: the windows' sizes and checks are final then)."""
        for start in list(state.pending):
            self._flush_pending(state, start)

    def _flush_pending(self, state: RoundState, start: int) -> None:
        placed = state.pending.pop(start, None)
        if placed is not None:
            self._flush(state, start, *placed)

    def _close(self, state: RoundState, start: int) -> Committed:
        """The round commits this open window: it is published once the round is durable."""
        self._flush_pending(state, start)
        window = state.windows.pop(start)
        state.fds.pop(start)
        state.publish.append(window.name)
        return Committed(window.name, window.rows, window.size)

    def _append(
        self,
        state: RoundState,
        start: int,
        runs: list[tuple[int, int]],
        rows: Rows,
        closed: list[Committed],
        *,
        late: bool = False,
    ) -> None:
        """The rows of `runs` to the window starting at `start` (a new file when none is open),
        one write per file; with --max-file-bytes, a file that reaches it is committed and the
        rest go on in a new file for the same window."""
        # Compressed files are measured as written: one write may take them past the limit.
        split = self.max_file_bytes is not None and self.plain
        if not split:  # the common case: every row to the one open file
            if start not in state.windows:
                self._create(state, start, late)
            count = sum(stop - first for first, stop in runs)
            if self.max_file_bytes is None and self.plain:
                # Gathered for the round's one write to this file (see flush).
                chunks, placed = state.pending.get(start, ([], 0))
                chunks += rows.gather(runs)
                state.pending[start] = (chunks, placed + count)
                return
            self._flush(state, start, rows.gather(runs), count)
            if self.max_file_bytes is not None and state.windows[start].size >= self.max_file_bytes:
                closed.append(self._close(state, start))
            return
        assert self.max_file_bytes is not None
        pending: list[memoryview] = []
        count = pending_bytes = 0
        for first, stop in runs:
            while first < stop:
                window = state.windows.get(start) or self._create(state, start, late)
                used = window.size or len(self.header)
                take = _rows_fitting(rows, first, stop, self.max_file_bytes - used - pending_bytes)
                if take == first and (window.rows or count):  # the next row goes to a new file
                    self._flush(state, start, pending, count)
                    pending, count, pending_bytes = [], 0, 0
                    closed.append(self._close(state, start))
                    continue
                take = max(take, first + 1)  # a row larger than the limit goes alone
                chunks = rows.chunks(first, take)
                pending += chunks
                pending_bytes += sum(map(len, chunks))
                count += take - first
                first = take
        self._flush(state, start, pending, count)
        if state.windows[start].size >= self.max_file_bytes:
            closed.append(self._close(state, start))

    def _create(self, state: RoundState, start: int, late: bool) -> OpenFile:
        """A new part file for the window starting at `start` (header written with its first rows)."""
        if len(state.created) >= OPEN_PARTS_PER_ROUND:
            # A round spanning thousands of windows has its part files written, synced and closed
            # in batches (the open windows' stay open).
            self.sync.run(state.writes)
            state.writes = []
            state.last_write = {}
            keep = set(state.fds.values())
            for fd in state.created:
                if fd not in keep:
                    os.close(fd)
            state.created = [fd for fd in state.created if fd in keep]
        # Named after the window's start: its first event, or with --align interval the multiple
        # of the interval it begins at; the next free -N name when that is taken.
        name = self.parts.name_for(start, state.taken)
        state.taken.add(name)
        fd = self.parts.create(name)
        state.created.append(fd)
        state.fds[start] = fd
        window = state.windows[start] = OpenFile(name, start, 0, 0, late)
        return window

    def _flush(self, state: RoundState, start: int, chunks: list[memoryview], count: int) -> None:
        """One write of the rows placed for the window's file, with its check. A file the round
        wrote to already gets them in that write, under one check (a group's requests each
        touching several windows would otherwise cost a write and a recorded check each)."""
        if not count:
            return
        window = state.windows[start]
        if window.size == 0 and self.header:
            chunks = [memoryview(self.header), *chunks]
        fd = state.fds[start]
        if not self.plain:  # one gzip member or zstd frame per write
            chunks = [memoryview(self._encode(b"".join(chunks)))]
        elif len(chunks) > _JOIN_FROM and sum(map(len, chunks)) <= _JOIN_BYTES:
            chunks = [memoryview(b"".join(chunks))]  # rows scattered over windows: one CRC call, one iovec
        before = state.last_write.get(fd)
        if before is not None and before[0].check.end == window.size:
            write, index = before
            crc, end = write.check.crc, write.check.end
            write.chunks += chunks
        else:
            write, index = Write(fd, chunks, Check(window.name, window.size, window.size, 0)), len(state.checks)
            crc, end = 0, window.size
            state.last_write[fd] = (write, index)
            state.writes.append(write)
            state.checks.append(write.check)
        for chunk in chunks:  # what recovery checks, with fsync off too (a process crash mid-round)
            crc = zlib.crc32(chunk, crc)
            end += len(chunk)
        write.check = state.checks[index] = Check(window.name, write.check.start, end, crc)
        state.windows[start] = OpenFile(window.name, start, end, window.rows + count, window.late)


def _rows_fitting(rows: Rows, first: int, stop: int, room: int) -> int:
    """The greatest j in [first, stop] such that rows [first, j) take at most `room` bytes."""
    if room <= 0:
        return first
    return (
        bisect.bisect_right(range(first, stop + 1), room, key=lambda j: sum(map(len, rows.chunks(first, j))))
        - 1
        + first
    )
