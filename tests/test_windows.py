"""The window policy, exhaustively: boundaries, late events, gaps, batches split any way."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batched_event_api.commit.windows import Plan, Segment, WindowPolicy, scan_window
from batched_event_api.events import _native, timestamps
from model import INTERVAL, SECOND
from writer_setup import POLICY


def windows_of(policy: WindowPolicy, batches: list[list[int]]) -> list[list[int]]:
    """Feed batches one after another (as requests do) and collect each window's event times."""
    windows: list[list[int]] = []
    open_start = None
    for times in batches:
        plan = policy.plan(open_start, times)
        for i, seg in enumerate(plan.segments):
            if i == 0 and plan.continues_open:
                windows[-1].extend(times[seg.first : seg.stop])
            else:
                windows.append(list(times[seg.first : seg.stop]))
        if plan.segments:
            open_start = plan.segments[-1].window_start
    return windows


def test_exact_boundary_starts_a_new_window():
    plan = POLICY.plan(None, [0, INTERVAL - 1, INTERVAL, INTERVAL + 1])
    assert plan.segments == [Segment(0, 2, 0), Segment(2, 4, INTERVAL)]
    assert not plan.continues_open


def test_windows_chain_from_the_first_event_of_each_window():
    # The reference example: a window starts at its first event, not on a clock boundary.
    times = [3 * SECOND, 290 * SECOND, 305 * SECOND, 600 * SECOND, 606 * SECOND]
    assert [s.window_start for s in POLICY.plan(None, times).segments] == [3 * SECOND, 305 * SECOND, 606 * SECOND]


def test_late_events_join_the_open_window_and_are_counted():
    plan = POLICY.plan(100 * SECOND, [150 * SECOND, 50 * SECOND, 99 * SECOND, 100 * SECOND, -10_000 * SECOND])
    assert plan.continues_open and plan.segments == [Segment(0, 5, 100 * SECOND)]
    assert plan.late == 3


def test_gap_longer_than_the_interval():
    plan = POLICY.plan(0, [10 * INTERVAL, 10 * INTERVAL + 1])
    assert not plan.continues_open  # the open window closes with nothing from this batch
    assert plan.segments == [Segment(0, 2, 10 * INTERVAL)]


def test_many_requests_into_one_window():
    batches = [[i * SECOND] for i in range(0, 299)]
    assert windows_of(POLICY, batches) == [[i * SECOND for i in range(299)]]


def test_empty_batch_changes_nothing():
    assert POLICY.plan(5, []) == Plan([], False, 0)
    assert POLICY.plan(None, []) == Plan([], False, 0)


def test_aligned_windows_start_on_multiples_of_the_interval():
    aligned = WindowPolicy(INTERVAL, aligned=True)
    times = [301 * SECOND, 599 * SECOND, 600 * SECOND, 1000 * SECOND]
    assert [s.window_start for s in aligned.plan(None, times).segments] == [INTERVAL, 2 * INTERVAL, 3 * INTERVAL]


event_times = st.lists(st.integers(-(10**12), 10**12).map(lambda x: x * 1000), max_size=60)


def _split(times: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % (len(times) + 1) for c in cuts})
    bounds = [0, *points, len(times)]
    return [times[a:b] for a, b in zip(bounds, bounds[1:])]


@given(event_times, st.lists(st.integers(0, 100), max_size=8), st.booleans(), st.integers(1, 10**12))
def test_windows_do_not_depend_on_how_events_are_split_into_requests(times, cuts, aligned, interval):
    p = WindowPolicy(interval, aligned=aligned)
    assert windows_of(p, _split(times, cuts)) == windows_of(p, [times])


@given(event_times, st.booleans())
def test_every_window_obeys_the_rule(times, aligned):
    p = WindowPolicy(INTERVAL, aligned=aligned)
    plan = p.plan(None, times)
    # Segments cover the batch in order, without gaps or overlap.
    assert [i for s in plan.segments for i in range(s.first, s.stop)] == list(range(len(times)))
    late = 0
    for seg in plan.segments:
        first = times[seg.first]
        assert seg.window_start == (first - first % INTERVAL if aligned else first)
        for t in times[seg.first : seg.stop]:
            assert t - seg.window_start < INTERVAL  # members are inside (or late)
            late += t < seg.window_start
    for prev, seg in zip(plan.segments, plan.segments[1:]):
        assert times[seg.first] - prev.window_start >= INTERVAL  # a new window starts only beyond the last
    assert plan.late == late


@st.composite
def batches_with_an_open_window(draw):
    """Mostly ordered times with late and far-ahead events, as a large request carries them."""
    n = draw(st.integers(64, 400))
    start = draw(st.integers(-(10**15), 10**15))
    steps = draw(st.lists(st.integers(-(10**11), 4 * 10**11), min_size=n, max_size=n))
    times = [start]
    for step in steps[1:]:
        times.append(times[-1] + step)
    open_start = draw(st.none() | st.integers(start - 10**12, start + 10**12))
    return times, open_start


@given(batches_with_an_open_window(), st.booleans(), st.sampled_from([INTERVAL, SECOND, 7 * SECOND, 3600 * SECOND]))
def test_the_native_scan_plans_as_the_plain_one(batch, aligned, interval):
    """An int64 buffer (what the native pass hands over) is planned by the C scan, a list by the
    plain Python loop: the same plan."""
    times, open_start = batch
    p = WindowPolicy(interval, aligned=aligned)
    assert p.plan(open_start, array("q", times)) == p.plan(open_start, times)


@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50),
    st.integers(0, 60),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**64), 2**64),
)
def test_native_scan_window_equals_the_plain_scan(times, first, start, bound):
    assert _native.scan_window(array("q", times), first, start, bound) == scan_window(times, first, start, bound)


# -- issue 19: window starts at the edges of int64 -------------------------------------------


def test_an_open_window_beyond_int64_from_an_older_journal_is_planned_not_a_crash():
    # An older version accepted year 2900; its recovered open window must not fail every request.
    far = 29_348_006_400 * SECOND  # 2900-01-01T00:00:00Z
    times = array("q", [1_719_799_384 * SECOND, 1_719_799_385 * SECOND])
    plan = POLICY.plan(far, times)
    assert plan.segments == [Segment(0, 2, far)] and plan.late == 2


@pytest.mark.parametrize("interval", [0, -SECOND, timestamps.MAX_INTERVAL_NS + 1])
def test_an_interval_without_room_at_the_edges_of_the_range_is_refused(interval):
    with pytest.raises(ValueError):
        WindowPolicy(interval)


@pytest.mark.parametrize("aligned", [False, True])
def test_windows_at_the_edges_of_the_range_fit_int64(aligned):
    p = WindowPolicy(timestamps.MAX_INTERVAL_NS, aligned=aligned)
    times = array("q", [timestamps.EARLIEST_NS, timestamps.LATEST_NS - 1, timestamps.EARLIEST_NS])
    plan = p.plan(None, times)
    assert len(plan.segments) == 2 and plan.late == 1
    for seg in plan.segments:
        assert seg.window_start >= -(2**63) and seg.window_start + p.interval <= 2**63 - 1
    assert plan == p.plan(None, list(times))


@given(batches_with_an_open_window(), st.booleans(), st.integers(1, 40), st.booleans())
def test_the_windows_limit_counts_the_windows_a_batch_opens_on_its_own(batch, aligned, limit, as_buffer):
    times, _ = batch
    p = WindowPolicy(INTERVAL, aligned=aligned)
    segments = p.plan(None, times).segments
    past = p.past_limit(array("q", times) if as_buffer else times, limit)
    assert past == (segments[limit].first if len(segments) > limit else None)
