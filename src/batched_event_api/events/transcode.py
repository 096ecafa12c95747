"""A request body to event times and CSV rows (a Batch), the one entry to events/. Pure: no I/O, no clock.

Each slice of the body goes through the native pass (`_native.c`) where it can; from the first
line the native pass leaves, the Python path (decode.py + render.py) takes the next few lines,
then the native pass carries on. Both paths render the same bytes; the Python path is also the
one that names the exact line and field of a bad event. Without the compiled module (no C
compiler at install time) everything takes the Python path.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from batched_event_api.errors import EventError
from batched_event_api.events.decode import decode, line_of, slices
from batched_event_api.events.native import native as _native
from batched_event_api.events.render import render_rows
from batched_event_api.events.rows import RowBlock, Rows

NATIVE = _native is not None

# Bodies are prepared in slices of about this size, so a large body's events never all exist as
# Python objects at once, and slices can be prepared on several threads.
SLICE = 4 * 1024 * 1024
# Lines the Python path takes when the native pass stops, before the native pass tries again.
_PYTHON_RUN = 64


@dataclass(frozen=True, slots=True)
class Batch:
    """Event times (UTC ns: int64 from the native pass, or a list of ints, always within
    timestamps.EARLIEST_NS..LATEST_NS) and rows, and the body they came from (for line numbers)."""

    times: Sequence[int]
    rows: Rows
    body: bytes | bytearray = b""

    def __len__(self) -> int:
        return len(self.rows)

    def line_of(self, index: int) -> int:
        """The body's line number (1-based) of event `index` (rare: for an error's answer)."""
        return line_of(self.body, index)


def transcode(
    body: bytes | bytearray,
    max_line: int,
    *,
    slice_size: int = SLICE,
    native: bool = NATIVE,
    map: Callable[..., Iterator[_Piece]] = map,
) -> Batch:
    """Times and rows of a whole body, or EventError for its first bad line. `map` may run the
    slices on a thread pool: the native pass releases the GIL."""
    bounds = slices(body, slice_size)
    if native and _native is not None:
        results = map(lambda b: _prepare_native(body, b[0], b[1], max_line), bounds)
    else:
        results = (_prepare_python(body, start, end, max_line) for start, end in bounds)
    times: list[Sequence[int]] = []
    blocks: list[RowBlock] = []
    for piece_times, piece_blocks in results:
        times += piece_times
        blocks += piece_blocks
    return Batch(_join_times(times), Rows(blocks), body)


_Piece = tuple[list[Sequence[int]], list[RowBlock]]


def _prepare_python(body: bytes | bytearray, start: int, end: int, max_line: int) -> _Piece:
    """body[start:end] through the Python path."""
    try:
        decoded = decode(body[start:end], max_line=max_line)
    except EventError as exc:
        if exc.line is not None:
            exc.line += body.count(b"\n", 0, start)  # counted only now: errors are rare
        raise
    return [decoded.times], [RowBlock.from_lines(render_rows(decoded))]


def _prepare_native(body: bytes | bytearray, start: int, end: int, max_line: int) -> _Piece:
    """body[start:end] through the native pass, with Python runs where it stops."""
    assert _native is not None
    times: list[Sequence[int]] = []
    blocks: list[RowBlock] = []
    view = memoryview(body)
    while start < end:
        csv, row_times, ends, stop = _native.transcode(view[start:end], max_line)
        blocks.append(RowBlock(csv, memoryview(ends).cast("q")))  # views of its buffers: no copies
        times.append(memoryview(row_times).cast("q"))
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


def _join_times(parts: list[Sequence[int]]) -> Sequence[int]:
    if len(parts) == 1:  # most bodies: one slice the native pass took whole
        return parts[0]
    if any(isinstance(p, list) for p in parts):  # the Python path took some lines
        return [t for p in parts for t in p]
    joined = array("q")
    for p in parts:
        joined.frombytes(cast(memoryview, p).cast("B"))  # the native pass's int64 views
    return joined
