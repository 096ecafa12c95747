"""Where a commit round's rows go: appended to the open window's part file, or written to new part
files for the windows its requests open; each write with the CRC recovery checks it by."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zstandard

from batched_event_api.commit.journal import Check, OpenFile
from batched_event_api.commit.partfiles import PartFiles
from batched_event_api.commit.sync import SyncRound, Write
from batched_event_api.commit.windows import Plan
from batched_event_api.config import Compress

if TYPE_CHECKING:
    from batched_event_api.events.rows import Rows

# A round spanning more windows than this has its part files written, synced and closed in batches.
OPEN_PARTS_PER_ROUND = 256


@dataclass(frozen=True, slots=True)
class Committed:
    name: str
    rows: int
    size: int


@dataclass(slots=True)
class RoundState:
    """The writer's state as a round's requests are placed; installed only once its record is durable."""

    open: OpenFile | None
    open_fd: int | None
    publish: list[str]
    taken: set[str]  # names no new window may take: the open one, those to publish, this round's
    created: list[int] = field(default_factory=list)  # part files created this round (descriptors)
    writes: list[Write] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # Idempotency-Keys applied this round
    key_bytes: int = 0  # what they will cost the key store
    events: int = 0


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
    def __init__(self, parts: PartFiles, sync: SyncRound, *, header: bytes, compress: Compress) -> None:
        self.parts = parts
        self.sync = sync
        self.header = header
        self._encode = _encoder(compress)

    def place_segments(self, plan: Plan, times: Sequence[int], rows: Rows, state: RoundState) -> list[Committed]:
        """Where one request's rows go, against the round's state so far: adds the writes and
        checks to the round, moves its open window on, and returns the windows the request
        closes. A round spanning thousands of windows has its part files written, synced and
        closed in batches."""
        closed: list[Committed] = []
        if state.open is not None and plan.segments and not plan.continues_open:
            closed.append(Committed(state.open.name, state.open.rows, state.open.size))
        files: list[OpenFile] = []  # every file this request writes to, in order
        for index, segment in enumerate(plan.segments):
            count = segment.stop - segment.first
            chunks = rows.chunks(segment.first, segment.stop)
            if index == 0 and plan.continues_open:
                assert state.open is not None and state.open_fd is not None
                write = self._write_for(state.open_fd, state.open.name, state.open.size, chunks)
                files.append(OpenFile(state.open.name, state.open.start, write.check.end, state.open.rows + count))
            else:
                if len(state.created) >= OPEN_PARTS_PER_ROUND:
                    self.sync.run(state.writes)
                    state.writes = []
                    while state.created:
                        os.close(state.created.pop())
                # Named after the window's start: its first event, or with --align interval the
                # multiple of the interval it begins at.
                name = self.parts.name_for(segment.window_start, state.taken)
                state.taken.add(name)
                fd = self.parts.create(name)
                state.created.append(fd)
                header = [memoryview(self.header)] if self.header else []
                write = self._write_for(fd, name, 0, header + chunks)
                files.append(OpenFile(name, segment.window_start, write.check.end, count))
                state.open_fd = fd
            state.writes.append(write)
            state.checks.append(write.check)
        closed += [Committed(f.name, f.rows, f.size) for f in files[:-1]]
        if files:
            state.open = files[-1]
        state.publish += [c.name for c in closed]
        return closed

    def _write_for(self, fd: int, name: str, offset: int, chunks: list[memoryview]) -> Write:
        """A write of the chunks at offset (one gzip member or zstd frame when compressing), with its check."""
        if self._encode is not _identity:
            chunks = [memoryview(self._encode(b"".join(chunks)))]
        crc = 0
        for chunk in chunks:  # what recovery checks, with fsync off too (a process crash mid-round)
            crc = zlib.crc32(chunk, crc)
        return Write(fd, chunks, Check(name, offset, offset + sum(map(len, chunks)), crc))
