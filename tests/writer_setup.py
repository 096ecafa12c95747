"""What the tests that drive the Writer in-process share: the window policy, the instant they
write at, requests prepared from events, and the crash that stops the process."""

from __future__ import annotations

from collections.abc import Sequence

from batched_event_api.commit.windows import WindowPolicy
from batched_event_api.events.rows import Rows
from batched_event_api.events.transcode import transcode
from model import INTERVAL, SECOND, ndjson

POLICY = WindowPolicy(INTERVAL)
T0 = 1_800_000_000 * SECOND  # 2027-01-15T08:00:00Z


class Crash(BaseException):
    """The process dies here (not an OSError: nothing in the writer may handle it)."""


def prepared(events: list[dict]) -> tuple[Sequence[int], Rows]:
    """A request's event times and rows, as the HTTP layer hands them to the writer."""
    request = transcode(ndjson(events), max_line=1 << 22)
    return request.times, request.rows
