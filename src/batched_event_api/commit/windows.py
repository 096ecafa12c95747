"""The window policies: which window each event goes to. Pure: no clock, no I/O.

WindowPolicy (the reference, `--align first-event`): a window starts at S, the time of its first event (or, aligned, the multiple of the interval at or
below it). An event e joins the open window while e - S < interval, including events earlier than
S ("late" events, counted). An event with e - S >= interval closes the open window and starts the
next one, so windows chain from the first event of each file, as in the reference.

StrictWindows (`--align interval`): window k holds exactly the events with time in [k*I, (k+1)*I),
so several windows are open at once. The watermark (the greatest event time accepted) commits a
window once it reaches the window's end + the allowed lateness; an event for a window committed
already re-opens it as a late file, which only idle time, the open-window cap or shutdown commit.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from batched_event_api.events.native import native
from batched_event_api.events.timestamps import MAX_INTERVAL_NS

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Segment:
    """Events [first, stop) of a batch that belong to the window starting at `window_start`."""

    first: int
    stop: int
    window_start: int


@dataclass(frozen=True, slots=True)
class Plan:
    """How one batch of events spreads over windows.

    `segments[0]` continues the open window when `continues_open` is true; every other segment
    opens a new window. All windows but the last one are complete once the batch is applied.
    """

    segments: list[Segment]
    continues_open: bool
    late: int


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    interval: int  # nanoseconds
    aligned: bool = False  # windows on multiples of the interval since the epoch

    def __post_init__(self) -> None:
        # Event times lie in timestamps.EARLIEST_NS..LATEST_NS: with at most MAX_INTERVAL_NS, every
        # window start and start + interval is an int64 too (and a zero interval would never end).
        if not 0 < self.interval <= MAX_INTERVAL_NS:
            raise ValueError(f"a window lasts more than 0 and at most {MAX_INTERVAL_NS} ns, not {self.interval}")

    def start_for(self, t: int) -> int:
        return t - t % self.interval if self.aligned else t

    def plan(self, open_start: int | None, times: Sequence[int]) -> Plan:
        """Split a batch's event times (UTC ns, arrival order) into windows. A window ends at the
        first event at or past its start + interval; the events before that one are its own,
        counted late when earlier than its start."""
        # The native scan takes int64 buffers; a list of Python ints (from the Python path) takes
        # the plain one, and so does an open window beyond int64 recovered from the journal of an
        # older version that accepted any year (this one's times are never outside it).
        fast = native is not None and not isinstance(times, list)
        segments: list[Segment] = []
        late = 0
        if not len(times):
            return Plan(segments, False, 0)
        continues_open = open_start is not None
        first = 0
        start = open_start if open_start is not None else self.start_for(times[0])
        while True:
            in_int64 = _INT64_MIN <= start <= _INT64_MAX
            scan = native.scan_window if fast and in_int64 else scan_window  # type: ignore[union-attr]
            stop, late_here = scan(times, first, start, start + self.interval)
            if stop > first:
                segments.append(Segment(first, stop, start))
                late += late_here
            else:  # the batch's first event already falls beyond the open window
                continues_open = False
            if stop == len(times):
                return Plan(segments, continues_open, late)
            first, start = stop, self.start_for(times[stop])

    def past_limit(self, times: Sequence[int], limit: int) -> int | None:
        """The index of the event that opens window `limit` + 1 of a batch planned on its own
        (open_start None: from its first event), or None when it opens at most `limit`. Stops at
        the limit: a request of a million windows costs no more than one of `limit`."""
        if not len(times):
            return None
        scan = scan_window
        if native is not None:  # on the event loop: a list (the Python path took lines) becomes int64 at C speed
            times, scan = (array("q", times) if isinstance(times, list) else times), native.scan_window
        first, start, opened = 0, self.start_for(times[0]), 1
        while True:
            stop, _ = scan(times, first, start, start + self.interval)
            if stop == len(times):
                return None
            if opened == limit:
                return stop
            first, start, opened = stop, self.start_for(times[stop]), opened + 1


@dataclass(frozen=True, slots=True)
class StrictWindows:
    interval: int  # nanoseconds
    lateness: int = 0  # nanoseconds past a window's end the watermark must reach to commit it
    max_open: int = 16  # windows open at once: opening one more commits the oldest first

    def __post_init__(self) -> None:
        if not 0 < self.interval <= MAX_INTERVAL_NS:
            raise ValueError(f"a window lasts more than 0 and at most {MAX_INTERVAL_NS} ns, not {self.interval}")
        if self.lateness < 0 or self.max_open < 1:
            raise ValueError("the lateness is at least 0 and at least one window may be open")

    def start_for(self, t: int) -> int:
        return t - t % self.interval

    def passed(self, start: int, watermark: int | None) -> bool:
        """Has the watermark passed the window starting at `start` (its end + the lateness)?"""
        return watermark is not None and start + self.interval + self.lateness <= watermark

    def group(self, times: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
        """A batch's events by window, in the order each window first appears: the runs [first,
        stop) of consecutive events in it, in arrival order. One pass over the events."""
        interval = self.interval
        groups: dict[int, list[tuple[int, int]]] = {}
        current, first = None, 0
        for i, t in enumerate(times):
            start = t - t % interval
            if start != current:
                if current is not None:
                    groups.setdefault(current, []).append((first, i))
                current, first = start, i
        if current is not None:
            groups.setdefault(current, []).append((first, len(times)))
        return groups

    def past_limit(self, times: Sequence[int], limit: int) -> int | None:
        """The index of the event whose window is the batch's `limit` + 1st distinct one, or None
        when it has at most `limit` (the common case: one set comprehension)."""
        interval = self.interval
        if len({t - t % interval for t in times}) <= limit:
            return None
        seen: set[int] = set()
        for i, t in enumerate(times):
            seen.add(t - t % interval)
            if len(seen) > limit:
                return i
        return None  # pragma: no cover  # the set above said otherwise


def scan_window(times: Sequence[int], first: int, start: int, bound: int) -> tuple[int, int]:
    """From index `first`: the index of the first time at or past `bound`, and how many times
    before it are earlier than `start` (the native pass has the same loop)."""
    late = 0
    for i in range(first, len(times)):
        t = times[i]
        if t >= bound:
            return i, late
        if t < start:
            late += 1
    return len(times), late
