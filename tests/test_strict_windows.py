"""Strict windows (`--align interval`) and --max-file-bytes, in-process: the policy, and the writer
against a plain model (strict_model.py) through crashes at every write and restarts."""

from __future__ import annotations

import tempfile
from array import array
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from batched_event_api.commit.journal import Journal, Record, encode_record
from batched_event_api.commit.windows import StrictWindows, WindowPolicy
from batched_event_api.commit.writer import Writer
from batched_event_api.events.rows import Rows
from batched_event_api.events.timestamps import utc_stamp
from model import INTERVAL, SECOND
from snapshots import csv_files
from strict_model import StrictModel
from writer_setup import T0, Crash

BASE = T0 - T0 % INTERVAL
times_over_windows = st.lists(st.integers(-3 * INTERVAL, 12 * INTERVAL - 1).map(lambda d: BASE + d), max_size=60)


@given(times_over_windows, st.integers(1, 5))
def test_every_event_goes_to_the_window_that_bounds_it_in_arrival_order(times, windows):
    policy = StrictWindows(INTERVAL * windows // 3 or INTERVAL)
    groups = policy.group(times)
    placed = []
    for start, runs in groups.items():
        assert start % policy.interval == 0
        indices = [i for first, stop in runs for i in range(first, stop)]
        assert indices == sorted(indices)  # arrival order inside the window
        assert all(start <= times[i] < start + policy.interval for i in indices)
        placed += indices
    assert sorted(placed) == list(range(len(times)))
    assert list(groups) == list(dict.fromkeys(t - t % policy.interval for t in times))  # first appearance


@given(times_over_windows, st.integers(1, 20), st.booleans())
def test_the_per_request_cap_counts_the_distinct_windows_a_request_touches(times, limit, as_buffer):
    policy = StrictWindows(INTERVAL)
    past = policy.past_limit(array("q", times) if as_buffer else times, limit)
    starts = [t - t % INTERVAL for t in times]
    if len(set(starts)) <= limit:
        assert past is None
    else:
        assert past is not None and len(set(starts[:past])) == limit and starts[past] not in starts[:past]


@given(st.integers(0, 3 * INTERVAL), st.integers(0, 20 * INTERVAL), st.integers(0, 20 * INTERVAL))
def test_the_watermark_passes_a_window_at_its_end_plus_the_lateness(lateness, start_offset, watermark_offset):
    policy = StrictWindows(INTERVAL, lateness)
    start = BASE + start_offset - start_offset % INTERVAL
    watermark = BASE + watermark_offset
    assert policy.passed(start, watermark) == (watermark >= start + INTERVAL + lateness)
    assert not policy.passed(start, None)


def _rows(times: list[int], tag: int) -> Rows:
    return Rows.from_lines([f"r{tag}-{i},{t}" for i, t in enumerate(times)])


def _model_request(times: list[int], tag: int) -> list[tuple[int, bytes]]:
    return [(t, f"r{tag}-{i},{t}\n".encode()) for i, t in enumerate(times)]


class _CrashingWrites:
    """The process dies at the n-th write of rows or a journal record (nothing after it runs)."""

    def __init__(self, writer: Writer, at: int) -> None:
        self.real, self.left = writer.disk.write, at
        writer.disk.write = self  # type: ignore[method-assign]

    def __call__(self, fd, chunks, offset):
        self.left -= 1
        if self.left == 0:
            raise Crash
        return self.real(fd, chunks, offset)


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(st.tuples(times_over_windows, st.booleans()), min_size=1, max_size=12),
    max_open=st.integers(1, 4),
    lateness=st.sampled_from([0, INTERVAL // 2, 2 * INTERVAL]),
    max_file_bytes=st.sampled_from([None, 60, 200]),
    header=st.booleans(),
    crash_at=st.one_of(st.none(), st.integers(1, 40)),
)
def test_the_writer_gives_the_model_files_through_crashes_and_idle_closes(
    requests, max_open, lateness, max_file_bytes, header, crash_at
):
    head = "time,row\n" if header else ""
    model = StrictModel(INTERVAL, lateness, max_open, max_file_bytes, head.encode())
    policy = StrictWindows(INTERVAL, lateness, max_open)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        def started() -> Writer:
            writer = Writer(directory, policy, fsync=False, header=head, max_file_bytes=max_file_bytes)
            writer.start()
            return writer

        writer = started()
        if crash_at is not None:
            _CrashingWrites(writer, crash_at)

        def step(do) -> None:
            nonlocal writer
            try:
                do(writer)
            except Crash:
                writer.close()  # SIGKILL: its descriptors and lock go with it
                writer = started()
                do(writer)  # a request resent with its key: applied once either way

        for tag, (times, idle_after) in enumerate(requests):
            model.apply(_model_request(times, tag))
            step(lambda w, times=times, tag=tag: w.apply(times, _rows(times, tag), key=f"k{tag}"))
            if idle_after:
                model.close_all()
                step(Writer.commit_open)
            assert len(writer.windows) <= max_open
        writer.close()  # a crash with windows open: resumed by the next start
        writer = started()
        writer.commit_open()
        writer.close()
        files = csv_files(directory)
        assert files == model.close_all()
        for name, data in files.items():
            rows = data.decode().splitlines()[1 if header else 0 :]
            starts = {int(row.split(",")[1]) - int(row.split(",")[1]) % INTERVAL for row in rows}
            for start in starts:  # a file's name bounds its rows
                assert name.startswith(f"user-events-{utc_stamp(start)}")
            if max_file_bytes is not None and len(rows) > 1:
                assert len(data) <= max_file_bytes


@settings(max_examples=30, deadline=None)
@given(requests=st.lists(times_over_windows, min_size=1, max_size=8), limit=st.integers(30, 300))
def test_max_file_bytes_rolls_first_event_windows_between_rows_and_keeps_every_row(requests, limit):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        for directory, max_file_bytes in ((Path(a), None), (Path(b), limit)):
            writer = Writer(directory, WindowPolicy(INTERVAL), fsync=False, max_file_bytes=max_file_bytes)
            writer.start()
            for tag, times in enumerate(requests):
                writer.apply(times, _rows(times, tag))
            writer.commit_open()
            writer.close()
        whole, rolled = csv_files(Path(a)), csv_files(Path(b))
        assert sorted(b"".join(rolled.values()).splitlines()) == sorted(b"".join(whole.values()).splitlines())
        for name, data in rolled.items():
            assert len(data) <= limit or data.count(b"\n") == 1, name
            assert any(data in window for window in whole.values())  # a piece of one window, rows whole
        assert len(rolled) >= len(whole)


def test_a_first_event_journal_is_written_as_older_versions_read_it_and_theirs_is_resumed(tmp_path):
    writer = Writer(tmp_path, WindowPolicy(INTERVAL), fsync=False)
    writer.start()
    writer.apply([BASE + SECOND], _rows([BASE + SECOND], 0))
    window = writer.open
    writer.close()
    assert window is not None
    journal = (tmp_path / ".journal").read_bytes()
    assert b'"open":' in journal and b'"windows"' not in journal  # a downgrade keeps the open window
    (tmp_path / ".journal").write_bytes(encode_record(Record(seq=5, open=window)))  # as 0.6 wrote it
    writer = Writer(tmp_path, WindowPolicy(INTERVAL), fsync=False)
    writer.start()
    assert writer.open == window and list(writer.windows) == [window.start]
    writer.apply([BASE + 2 * SECOND], _rows([BASE + 2 * SECOND], 1))
    writer.commit_open()
    writer.close()
    assert list(csv_files(tmp_path).values())[0].count(b"\n") == 2


def test_strict_windows_journal_every_open_window_and_the_watermark(tmp_path):
    writer = Writer(tmp_path, StrictWindows(INTERVAL, lateness=INTERVAL, max_open=4), fsync=False)
    writer.start()
    times = [BASE + INTERVAL + 1, BASE + 1, BASE + 2 * INTERVAL + 1]
    writer.apply(times, _rows(times, 0))  # the watermark passes [BASE, BASE + INTERVAL) + lateness only
    writer.close()
    [record] = Journal(tmp_path, writer.disk, fsync=False).read()[0][-1:]
    assert record.open is None and [w.start for w in record.windows] == [BASE + INTERVAL, BASE + 2 * INTERVAL]
    assert record.watermark == BASE + 2 * INTERVAL + 1
