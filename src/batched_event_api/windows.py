"""The window policy: which events start a new window. Pure: no clock, no I/O.

A window starts at S, the time of its first event (or, aligned, the multiple of the interval at or
below it). An event e joins the open window while e - S < interval, including events earlier than
S ("late" events, counted). An event with e - S >= interval closes the open window and starts the
next one, so windows chain from the first event of each file, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# From this many events on, an int64 array is planned with array operations.
_VECTOR_MIN = 64
_INT64_MAX = 2**63 - 1


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

    def start_for(self, t: int) -> int:
        return t - t % self.interval if self.aligned else t

    def plan(self, open_start: int | None, times: Sequence[int] | np.ndarray) -> Plan:
        """Split a batch's event times (UTC ns, arrival order) into windows."""
        if isinstance(times, np.ndarray):
            if len(times) >= _VECTOR_MIN:
                return self._plan_array(open_start, times)
            times = times.tolist()
        interval = self.interval
        segments: list[Segment] = []
        continues_open = open_start is not None
        start = open_start
        first = late = 0
        for i, t in enumerate(times):
            if start is None or t - start >= interval:
                if i > first:
                    segments.append(Segment(first, i, start))
                elif start is not None:  # the batch's first event already falls beyond the open window
                    continues_open = False
                start = self.start_for(t)
                first = i
            elif t < start:
                late += 1
        if len(times):
            segments.append(Segment(first, len(times), start))
        return Plan(segments, continues_open and bool(times), late)

    def _plan_array(self, open_start: int | None, times: np.ndarray) -> Plan:
        """plan() in array operations: a window ends at the first event at or past start +
        interval, which is where the running maximum first reaches it (every event before that
        one is below it), so a binary search on the running maximum finds each window's end."""
        peak = np.maximum.accumulate(times)
        segments: list[Segment] = []
        late = 0
        continues_open = open_start is not None
        first = 0
        start = open_start if open_start is not None else self.start_for(int(times[0]))
        while True:
            bound = start + self.interval
            stop = len(times) if bound > _INT64_MAX else int(np.searchsorted(peak, bound, side="left"))
            if stop > first:
                segments.append(Segment(first, stop, start))
                late += int(np.count_nonzero(times[first:stop] < start))
            else:  # the batch's first event already falls beyond the open window
                continues_open = False
            if stop == len(times):
                break
            first, start = stop, self.start_for(int(times[stop]))
        return Plan(segments, continues_open, late)
