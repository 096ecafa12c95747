"""Group commit against the one-at-a-time model: any requests, cut into any groups, give the same
answers and byte-identical files as applying them one after another in their order."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from batched_event_api.commit.windows import StrictWindows
from batched_event_api.commit.writer import Request, Writer
from batched_event_api.events.rows import Rows
from batched_event_api.events.transcode import Batch
from model import INTERVAL, MINUTE
from snapshots import csv_files
from writer_setup import POLICY

# Event times over a few windows, late ones included; keys from a small set, so that repeats
# (a resend, or two equal keys in one group) are common.
times = st.lists(st.integers(0, 40).map(lambda m: m * MINUTE // 2), max_size=12)
keys = st.none() | st.sampled_from([f"k{i}" for i in range(6)])
requests = st.lists(st.tuples(times, keys), min_size=1, max_size=25)


def _request(number: int, times: list[int], key: str | None) -> Request:
    return Request(Batch(times, Rows.from_lines([f"r{number}-{i}" for i in range(len(times))])), key)


def _outcome(applied) -> tuple:
    return applied.accepted, applied.replay, applied.late, [c.name for c in applied.committed]


@settings(max_examples=150, deadline=None)
@given(
    requests=requests,
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=25),
    policy=st.sampled_from([POLICY, StrictWindows(INTERVAL, max_open=2), StrictWindows(INTERVAL, MINUTE)]),
    max_file_bytes=st.sampled_from([None, None, 40]),
)
def test_groups_give_the_answers_and_files_of_one_request_at_a_time(requests, cuts, policy, max_file_bytes):
    work = [_request(n, t, k) for n, (t, k) in enumerate(requests)]
    options = dict(fsync=False, max_file_bytes=max_file_bytes)
    with tempfile.TemporaryDirectory() as one_dir, tempfile.TemporaryDirectory() as group_dir:
        one = Writer(Path(one_dir), policy, **options)
        one.start()
        expected = [_outcome(one.apply(r.batch.times, r.batch.rows, r.key)) for r in work]
        one.commit_open()
        one.close()

        grouped = Writer(Path(group_dir), policy, **options)
        grouped.start()
        got, i = [], 0
        for size in cuts * len(work):
            if i >= len(work):
                break
            got += [_outcome(a) for a in grouped.apply_group(work[i : i + size])]
            i += size
        grouped.commit_open()
        grouped.close()
        assert got == expected
        assert csv_files(Path(group_dir)) == csv_files(Path(one_dir))

        again = Writer(Path(group_dir), policy, **options)  # and the keys survive a restart
        again.start()
        assert {k: e for k, e, _ in again.keys.items()} == {k: e for k, e, _ in one.keys.items()}
        again.close()


def test_a_storage_error_fails_the_whole_group_and_changes_nothing(tmp_path, monkeypatch):
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([0], Rows.from_lines(["before"]), key="a")
    state = (writer.open, writer.seq, writer.keys.items())

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.disk, "sync_data", disk_full)
    group = [_request(1, [MINUTE], "b"), _request(2, [20 * MINUTE], None), _request(3, [21 * MINUTE], "c")]
    try:
        writer.apply_group(group)
        raise AssertionError("the group was applied")
    except Exception as exc:  # noqa: BLE001 - the StorageError the app answers 503
        assert type(exc).__name__ == "StorageError" and "disk is full" in str(exc)
    assert (writer.open, writer.seq, writer.keys.items()) == state
    monkeypatch.undo()
    assert [a.accepted for a in writer.apply_group(group)] == [1, 1, 1]  # all of it, once healed
    writer.commit_open()
    writer.close()
    assert b"".join(csv_files(tmp_path).values()).decode().split() == ["before", "r1-0", "r2-0", "r3-0"]
