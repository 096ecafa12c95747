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


# -- rounds on the event loop (--fsync never) ---------------------------------------------------


def _entries(directory: Path) -> dict[str, int]:
    """Every name in the directory and its inode: a file created, renamed or replaced shows."""
    return {p.name: p.stat().st_ino for p in directory.iterdir()}


@settings(max_examples=100, deadline=None)
@given(
    requests=st.lists(st.tuples(times, keys, st.integers(1, 3000)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=10),
    max_file_bytes=st.sampled_from([None, 6000]),
)
def test_a_round_light_allows_only_appends_to_the_open_file(requests, cuts, max_file_bytes):
    """What Writer.light lets run on the event loop never creates, renames, compresses or
    compacts a file (it appends to the one open file and the journal): rows of any length
    (a float renders to hundreds of digits), keys that fill the journal towards compaction,
    --max-file-bytes."""
    from batched_event_api.commit.writer import LIGHT_BYTES

    work = [
        Request(Batch(t, Rows.from_lines([f"r{n}-{i}" + "9" * width for i in range(len(t))])), k and f"{k}-{n}" * 20)
        for n, (t, k, width) in enumerate(requests)
    ]
    with tempfile.TemporaryDirectory() as directory:
        writer = Writer(Path(directory), POLICY, fsync=False, compact_bytes=8 * 1024, max_file_bytes=max_file_bytes)
        writer.start()
        i = 0
        for size in cuts * len(work):
            if i >= len(work):
                break
            group, i = work[i : i + size], i + size
            light = writer.light(group)
            before, seq = _entries(Path(directory)), writer.seq
            writer.apply_group(group)
            if light:
                assert sum(r.batch.rows.size for r in group) <= LIGHT_BYTES
                assert _entries(Path(directory)) == before, "a light round created, renamed or compacted a file"
                assert writer.seq in (seq, seq + 1)
        writer.close()


def test_light_says_no_to_fsync_compression_a_new_window_and_a_large_round(tmp_path):
    from batched_event_api.commit.writer import LIGHT_BYTES
    from batched_event_api.config import Compress

    def one(t: int, size: int = 100, key: str | None = None) -> list[Request]:
        return [Request(Batch([t], Rows.from_lines(["r" * (size - 1)]), b"{}"), key)]

    writer = Writer(tmp_path / "never", POLICY, fsync=False)
    (tmp_path / "never").mkdir()
    writer.start()
    assert not writer.light(one(0))  # no window open yet: the round creates a file
    writer.apply_group(one(0))
    assert writer.light(one(MINUTE))
    assert not writer.light(one(INTERVAL))  # past the open window's end: a new file and a publish
    assert not writer.light(one(MINUTE, LIGHT_BYTES + 1))  # its rows' bytes count, not its body's
    assert writer.light(one(-MINUTE))  # a late event joins the open window
    writer.close()

    # Keys: one whose record would bring the journal to compaction, or a round that would expire many.
    (tmp_path / "keys").mkdir()
    now = [1_000_000.0]
    keyed = Writer(
        tmp_path / "keys", POLICY, fsync=False, compact_bytes=12 * 1024, key_retention=60, clock=lambda: now[0]
    )
    keyed.start()
    keyed.apply_group(one(0))
    assert keyed.light(one(MINUTE, key="k" * 200))
    assert not keyed.light(one(MINUTE, key="k" * 200) * 30)  # 30 keys of 200 characters: past 12 KiB
    keyed.apply_group([Request(Batch([MINUTE], Rows.from_lines(["r"])), f"k{i}") for i in range(100)])
    now[0] += 61  # every one of the 100 keys is due to expire
    assert not keyed.light(one(MINUTE))
    keyed.close()
    for name, options in {"always": {"fsync": True}, "gzip": {"fsync": False, "compress": Compress.GZIP}}.items():
        (tmp_path / name).mkdir()
        other = Writer(tmp_path / name, POLICY, **options)
        other.start()
        other.apply_group(one(0))
        assert not other.light(one(MINUTE)), name
        other.close()


def test_committer_runs_light_rounds_on_the_loop_and_the_rest_on_the_thread():
    import asyncio
    import threading

    from batched_event_api.commit.group import Committer
    from batched_event_api.commit.thread import SerialThread

    threads: list[list[str]] = []  # each round's requests, then the thread it ran on

    def apply_group(requests: list[str]) -> list[str]:
        if "boom" in requests:
            raise OSError(5, "I/O error")
        threads.append([*requests, threading.current_thread().name])
        return [r.upper() for r in requests]

    async def main() -> list[tuple[str, object, object]]:
        thread = SerialThread("writer-test")
        committer = Committer(apply_group, thread, light=lambda requests: "heavy" not in requests)
        answers: list[tuple[str, object, object]] = []
        loop = asyncio.get_running_loop()

        def submit(request: str) -> None:
            committer.submit(request, lambda outcome, error: answers.append((request, outcome, error)))

        for r in ("a", "b"):  # parsed in one turn of the loop: one round
            submit(r)
        await committer.drained()
        submit("heavy")
        await committer.drained()
        submit("boom")
        await committer.drained()
        # The thread busy with another call (an idle commit): a light round waits for no one, but
        # goes to the thread, behind it.
        release = threading.Event()
        busy = loop.create_task(thread.call(release.wait))
        await asyncio.sleep(0)
        submit("c")
        await asyncio.sleep(0)
        release.set()
        await busy
        await committer.drained()
        thread.shutdown()
        return answers

    answers = asyncio.run(main())
    assert threads == [["a", "b", "MainThread"], ["heavy", "writer-test"], ["c", "writer-test"]]
    assert [(r, o) for r, o, _ in answers] == [("a", "A"), ("b", "B"), ("heavy", "HEAVY"), ("boom", None), ("c", "C")]
    assert isinstance(answers[3][2], OSError)


def test_a_slow_round_on_the_loop_sends_rounds_to_the_thread_for_a_while():
    """A round on the event loop that takes longer than LIGHT_STALL (the disk throttling even a
    few KB) stalls every connection: the rounds after it go to the thread for LIGHT_PAUSE."""
    import asyncio
    import threading

    from batched_event_api.commit.group import LIGHT_PAUSE, LIGHT_STALL, Committer
    from batched_event_api.commit.thread import SerialThread

    now = [0.0]
    where: list[str] = []

    def apply_group(requests: list[str]) -> list[str]:
        where.append(threading.current_thread().name)
        if "slow" in requests:
            now[0] += 2 * LIGHT_STALL
        return requests

    async def main() -> None:
        thread = SerialThread("writer-test")
        committer = Committer(apply_group, thread, light=lambda requests: True, clock=lambda: now[0])
        for request in ("fast", "slow", "after", "later"):
            if request == "later":
                now[0] += LIGHT_PAUSE
            committer.submit(request, lambda outcome, error: None)
            await committer.drained()
        thread.shutdown()

    asyncio.run(main())
    assert where == ["MainThread", "MainThread", "writer-test", "MainThread"]
