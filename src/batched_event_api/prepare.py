"""A request body to event times and CSV rows. Pure: no I/O, no clock.

Each slice of the body goes through the native pass (`_native.c`) where it can; from the first
line the native pass leaves, the Python path (decode.py + render.py) takes the next few lines,
then the native pass carries on. Both paths render the same bytes; the Python path is also the
one that names the exact line and field of a bad event. Without the compiled module (no C
compiler at install time) everything takes the Python path.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .decode import decode, slices
from .errors import EventError
from .render import render_rows

try:
    from . import _native
except ImportError:  # pragma: no cover - only without a C compiler at install time
    _native = None

NATIVE = _native is not None and os.environ.get("BEA_NATIVE", "1") != "0"

# Bodies are prepared in slices of about this size, so a large body's events never all exist as
# Python objects at once, and slices can be prepared on several threads.
SLICE = 4 * 1024 * 1024
# Lines the Python path takes when the native pass stops, before the native pass tries again.
_PYTHON_RUN = 64
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class RowBlock:
    """Consecutive CSV rows in one buffer; ends[i] is the offset just past row i's newline."""

    data: bytes | memoryview
    ends: np.ndarray

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> RowBlock:
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        if len(data) == sum(map(len, lines)) + len(lines):  # ASCII: a character is a byte
            sizes = [len(line) + 1 for line in lines]
        else:
            sizes = [len(line.encode()) + 1 for line in lines]
        return cls(data, np.cumsum(sizes, dtype=np.int64))


class Rows:
    """The rendered rows of one request, kept in the blocks they were rendered in (no copies)."""

    def __init__(self, blocks: Iterable[RowBlock]) -> None:
        self.blocks = [b for b in blocks if len(b.ends)]
        self._firsts = [0]  # index of each block's first row
        for block in self.blocks:
            self._firsts.append(self._firsts[-1] + len(block.ends))

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> Rows:
        return cls([RowBlock.from_lines(lines)])

    def __len__(self) -> int:
        return self._firsts[-1]

    def chunks(self, first: int, stop: int) -> list[memoryview]:
        """The bytes of rows [first, stop), newlines included, as views into the blocks."""
        out = []
        index = bisect.bisect_right(self._firsts, first) - 1
        while first < stop:
            block, base = self.blocks[index], self._firsts[index]
            last = min(stop, self._firsts[index + 1])
            begin = int(block.ends[first - base - 1]) if first > base else 0
            out.append(memoryview(block.data)[begin : int(block.ends[last - base - 1])])
            first = last
            index += 1
        return out

    def text(self) -> str:
        """All rows as one string (tests and tools; the writer uses chunks)."""
        return b"".join(self.chunks(0, len(self))).decode()


@dataclass(frozen=True, slots=True)
class Prepared:
    """Event times (UTC ns: an int64 array, or a list when one lies beyond int64) and rows."""

    times: np.ndarray | list[int]
    rows: Rows

    def __len__(self) -> int:
        return len(self.rows)


def prepare(
    body: bytes,
    max_line: int,
    *,
    slice_size: int = SLICE,
    native: bool = NATIVE,
    map: Callable[..., Iterator[_Piece]] = map,
) -> Prepared:
    """Times and rows of a whole body, or EventError for its first bad line. `map` may run the
    slices on a thread pool: the native pass releases the GIL."""
    bounds = slices(body, slice_size)
    if native and _native is not None:
        results = map(lambda b: _prepare_native(body, *b, max_line), bounds)
    else:
        results = (_prepare_python(body, start, end, max_line) for start, end in bounds)
    times: list[np.ndarray | list[int]] = []
    blocks: list[RowBlock] = []
    for piece_times, piece_blocks in results:
        times += piece_times
        blocks += piece_blocks
    return Prepared(_join_times(times), Rows(blocks))


_Piece = tuple[list[np.ndarray | list[int]], list[RowBlock]]


def _prepare_python(body: bytes, start: int, end: int, max_line: int) -> _Piece:
    """body[start:end] through the Python path."""
    try:
        decoded = decode(body[start:end], max_line=max_line)
    except EventError as exc:
        if exc.line is not None:
            exc.line += body.count(b"\n", 0, start)  # counted only now: errors are rare
        raise
    times: np.ndarray | list[int] = decoded.times
    if not times or _INT64[0] <= min(times) and max(times) <= _INT64[1]:
        times = np.array(times, dtype=np.int64)
    return [times], [RowBlock.from_lines(render_rows(decoded))]


def _prepare_native(body: bytes, start: int, end: int, max_line: int) -> _Piece:
    """body[start:end] through the native pass, with Python runs where it stops."""
    times: list[np.ndarray | list[int]] = []
    blocks: list[RowBlock] = []
    view = memoryview(body)
    while start < end:
        csv, row_times, ends, stop = _native.transcode(view[start:end], max_line)
        blocks.append(RowBlock(csv, np.frombuffer(ends, dtype=np.int64)))
        times.append(np.frombuffer(row_times, dtype=np.int64))
        start += stop
        if start == end:
            break
        # The native pass left the line at `start`: the Python path takes it and a few more.
        run_end = start
        for _ in range(_PYTHON_RUN):
            run_end = body.find(b"\n", run_end, end) + 1
            if run_end == 0:
                run_end = end
                break
        run_times, run_blocks = _prepare_python(body, start, run_end, max_line)
        times += run_times
        blocks += run_blocks
        start = run_end
    return times, blocks


def _join_times(parts: list[np.ndarray | list[int]]) -> np.ndarray | list[int]:
    if len(parts) == 1:  # most bodies: one slice the native pass took whole
        return parts[0]
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    out: list[int] = []
    for p in parts:
        out += p.tolist() if isinstance(p, np.ndarray) else p
    return out
