"""Recovery of the writer from the on-disk state of every crash point of the commit protocol.

Each test runs the real writer up to a point, stops it there as a SIGKILL would (nothing after
that point runs), starts a new writer on the directory and checks that the interrupted request
is either wholly present or wholly absent, and that carrying on gives the uninterrupted files.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from batched_event_api.commit.journal import JOURNAL, JournalDamaged
from batched_event_api.commit.keys import key_cost
from batched_event_api.commit.partfiles import part_name
from batched_event_api.commit.writer import Request as WriteRequest
from batched_event_api.commit.writer import Writer
from batched_event_api.events.rows import Rows
from batched_event_api.events.transcode import Batch
from model import MINUTE, generate_events
from snapshots import csv_files, tree
from writer_setup import POLICY, Crash, prepared


def batches(seed: int = 11, n: int = 40) -> list[tuple[list[int], Rows]]:
    events = generate_events(random.Random(seed), 2000)
    step = len(events) // n
    return [prepared(events[i : i + step]) for i in range(0, len(events), step)]


def run(
    directory: Path,
    work,
    *,
    crash_at: int | None = None,
    point: str = "",
    monkeypatch=None,
    finish: bool = True,
    **options,
) -> Writer:
    writer = Writer(directory, POLICY, **options)
    writer.start()
    for i, (times, rows) in enumerate(work):
        if i == crash_at:
            inject(writer, point, monkeypatch)
            with pytest.raises(Crash):
                writer.apply(times, rows, key=f"k{i}")
            writer.close()  # the process is gone: its descriptors and lock with it
            return writer
        writer.apply(times, rows, key=f"k{i}")
    if finish:
        writer.commit_open()
    writer.close()
    return writer


def inject(writer: Writer, point: str, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise Crash

    if point in ("torn-record", "rows-lost"):

        def commit_then_crash(record, written, *, new_entries):
            from batched_event_api.commit.journal import encode_record

            line = encode_record(record)
            if point == "torn-record":
                line = line[: len(line) // 2]
            else:  # a power cut: the record reached the disk, the request's rows did not
                for check in record.checks:
                    os.truncate(writer.directory / part_name(check.name), check.start)
            os.pwrite(writer.journal.fd, line, writer.journal.size)
            raise Crash

        monkeypatch.setattr(writer, "_commit", commit_then_crash)
    elif point == "syncfs":
        monkeypatch.setattr(writer.disk, "sync_filesystem", crash)
    elif point == "no-record":
        real_write = writer.disk.write

        def write(fd, chunks, offset):
            if fd == writer.journal.fd:
                raise Crash
            return real_write(fd, chunks, offset)

        monkeypatch.setattr(writer.disk, "write", write)
    elif point == "linked-not-unlinked":  # where renameat2 is missing: publish by link, then unlink
        monkeypatch.setattr("batched_event_api.commit.disk._rename_noreplace", lambda src, dst: False)
        real_unlink = os.unlink

        def unlink_then_crash(path, *a, **k):
            if str(path).endswith(".inprogress"):
                raise Crash
            return real_unlink(path, *a, **k)

        monkeypatch.setattr("batched_event_api.commit.disk.os.unlink", unlink_then_crash)
    elif point == "sync_data":  # after every write of the round, at its first per-file sync
        monkeypatch.setattr(writer.disk, "sync_data", crash)
    elif point == "place_segments":
        monkeypatch.setattr(writer.placement, point, crash)
    else:
        monkeypatch.setattr(writer, point, crash)


def resume(directory: Path, work, start: int) -> None:
    writer = Writer(directory, POLICY)
    writer.start()
    for i, (times, rows) in enumerate(work[start:], start=start):
        writer.apply(times, rows, key=f"k{i}")  # resent with the same key when it was applied
    writer.commit_open()
    writer.close()


@pytest.fixture(scope="module")
def work():
    return batches()


@pytest.fixture(scope="module")
def expected(work, tmp_path_factory):
    directory = tmp_path_factory.mktemp("clean")
    run(directory, work)
    files = csv_files(directory)
    assert len(files) > 5
    return files


@pytest.mark.parametrize(
    ("point", "applied"),
    [
        ("place_segments", False),  # before any byte of the request
        ("no-record", False),  # rows written to part files, no journal record
        ("torn-record", False),  # half a journal record on disk
        ("rows-lost", False),  # power cut: the record on disk, the rows not (rolled back)
        ("sync_data", True),  # rows and record written, the per-file syncs not done: both kept
        ("syncfs", True),  # the same where one syncfs() makes the round durable
        ("_publish_pending", True),  # record durable, closed windows not yet renamed
        ("linked-not-unlinked", True),  # final name linked, part file still there
    ],
)
@pytest.mark.parametrize("crash_at", [7, 19, 33])
def test_recovery_from_each_crash_point(tmp_path, work, expected, point, applied, crash_at, monkeypatch):
    sync = {"syncfs": {"syncfs_from": 1}, "sync_data": {"syncfs_from": None}}.get(point, {})
    run(tmp_path, work, crash_at=crash_at, point=point, monkeypatch=monkeypatch, **sync)
    monkeypatch.undo()
    writer = Writer(tmp_path, POLICY)
    writer.start()
    assert (f"k{crash_at}" in writer.keys) == applied
    parts = [p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress")]
    assert parts == ([part_name(writer.open.name)] if writer.open else [])
    if writer.open:
        assert (tmp_path / part_name(writer.open.name)).stat().st_size == writer.open.size
    # Every committed file so far is a prefix of the expected set, complete and exact.
    for name, content in csv_files(tmp_path).items():
        assert expected[name] == content
    writer.close()
    resume(tmp_path, work, crash_at)
    assert csv_files(tmp_path) == expected


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_keys_survive_restarts_and_last_for_their_retention_whatever_others_send(tmp_path, work):
    clock = Clock()
    writer = Writer(tmp_path, POLICY, key_retention=3600, clock=clock)
    writer.start()
    writer.apply(*work[0], key="mine")
    # 12,000 other clients' keys (the old count-bounded store kept 10,000): "mine" stays.
    for i in range(12_000):
        clock.now += 0.1
        writer.apply([], Rows.from_lines([]), key=f"other-{i}")
        writer.apply_group([WriteRequest(Batch([work[1][0][0]], Rows.from_lines(["x"])), key=f"other-{i}")])
    writer.close()
    writer = Writer(tmp_path, POLICY, key_retention=3600, clock=clock)
    writer.start()
    size = sum(len(c) for c in csv_files(tmp_path).values()) + (writer.open.size if writer.open else 0)
    again = writer.apply(*work[0], key="mine")
    assert again.replay and again.accepted == len(work[0][0])
    assert sum(len(c) for c in csv_files(tmp_path).values()) + writer.open.size == size
    # Past its retention (1,200 s of the hour went by above) it is forgotten, across a restart too.
    clock.now += 2401
    writer.close()
    writer = Writer(tmp_path, POLICY, key_retention=3600, clock=clock)
    writer.start()
    assert "mine" not in writer.keys and "other-11999" in writer.keys
    assert not writer.apply(*work[0], key="mine").replay
    writer.close()


def test_a_new_key_beyond_the_key_memory_is_refused_not_an_old_one_forgotten(tmp_path, work):
    clock = Clock()
    writer = Writer(tmp_path, POLICY, key_retention=60, key_memory=10 * key_cost("k0"), clock=clock)
    writer.start()
    for i in range(10):
        assert not writer.apply([work[0][0][0]], Rows.from_lines([f"{i}"]), key=f"k{i}").replay
    refused = writer.apply([work[0][0][0]], Rows.from_lines(["late"]), key="kX")
    assert refused.keys_full is not None and 0 < refused.keys_full <= 60 and refused.accepted == 0
    assert writer.open.rows == 10  # nothing of it written
    assert writer.apply([work[0][0][0]], Rows.from_lines(["0"]), key="k0").replay  # the old ones still known
    assert not writer.apply([work[0][0][0]], Rows.from_lines(["u"])).replay  # keyless requests go on
    clock.now += 61  # the old keys expire: room again
    assert not writer.apply([work[0][0][0]], Rows.from_lines(["late"]), key="kX").replay
    writer.close()


def test_journal_is_compacted(tmp_path):
    clock = Clock()
    writer = Writer(tmp_path, POLICY, key_retention=10, clock=clock)
    writer.start()
    for i in range(2500):
        clock.now += 1
        writer.apply([i * 10**9], Rows.from_lines([f"{i}"]), key=f"k{i}")
    writer.close()
    assert (tmp_path / JOURNAL).stat().st_size < 200_000
    writer = Writer(tmp_path, POLICY, key_retention=10, clock=clock)
    writer.start()
    assert list(writer.keys) == [f"k{i}" for i in range(2490, 2500)]  # applied in the last 10 s
    assert writer.open is not None and writer.open.rows == 2500 - 2400
    writer.close()


def test_a_second_server_cannot_take_the_directory(tmp_path):
    first = Writer(tmp_path, POLICY)
    first.start()
    with pytest.raises(RuntimeError, match="in use"):
        Writer(tmp_path, POLICY).start()
    first.close()


def test_stray_temporary_journal_is_ignored(tmp_path, work):
    run(tmp_path, work[:5], finish=False)
    (tmp_path / (JOURNAL + ".tmp")).write_bytes(b"garbage from a crash during compaction")
    resume(tmp_path, work, 5)
    clean = tmp_path.parent / "clean2"
    clean.mkdir()
    run(clean, work)
    assert csv_files(tmp_path) == csv_files(clean)


def test_a_damaged_journal_stops_the_start_instead_of_discarding_rows(tmp_path, work):
    run(tmp_path, work[:5], finish=False)
    parts = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress"))
    assert parts
    (tmp_path / JOURNAL).write_bytes(b"\x00garbage\n")
    with pytest.raises(RuntimeError, match="unreadable"):
        Writer(tmp_path, POLICY).start()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress")) == parts


def test_publishing_never_replaces_a_file(tmp_path):
    from batched_event_api.commit.disk import _rename_noreplace

    (tmp_path / "part").write_text("window")
    (tmp_path / "final.csv").write_text("someone else's")
    with pytest.raises(FileExistsError):
        _rename_noreplace(tmp_path / "part", tmp_path / "final.csv")
    assert (tmp_path / "final.csv").read_text() == "someone else's" and (tmp_path / "part").exists()
    assert _rename_noreplace(tmp_path / "part", tmp_path / "free.csv")  # renameat2 is there on Linux
    assert (tmp_path / "free.csv").read_text() == "window" and not (tmp_path / "part").exists()


def test_a_window_whose_name_is_taken_by_a_foreign_file_is_published_under_the_next_free_name(tmp_path, caplog):
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([0], Rows.from_lines(["first window"]))
    name = writer.open.name
    (tmp_path / name).write_text("not ours")  # appears before the window is committed
    writer.apply([10 * MINUTE], Rows.from_lines(["second window"]))  # commits the first
    writer.apply([11 * MINUTE], Rows.from_lines(["second window, more"]))  # a round later: settled
    assert writer._publish == []  # nothing left pending: no error on every request
    writer.close()
    renamed = name.replace(".csv", "-1.csv")
    for _ in range(2):  # and nothing more happens across restarts
        caplog.clear()
        writer = Writer(tmp_path, POLICY)
        writer.start()
        writer.close()
        assert (tmp_path / name).read_text() == "not ours"
        assert (tmp_path / renamed).read_text() == "first window\n"
        assert not (tmp_path / part_name(name)).exists()
        assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


@pytest.mark.parametrize("syncfs_from", [None, 1])
def test_per_file_and_filesystem_syncs_give_the_same_files(tmp_path, work, expected, syncfs_from):
    writer = run(tmp_path, work, syncfs_from=syncfs_from)
    assert writer.sync.syncfs_from == syncfs_from  # syncfs() is there on the Linux this runs on
    assert csv_files(tmp_path) == expected


def test_a_damaged_record_before_intact_ones_stops_the_start_and_touches_nothing(tmp_path, work):
    run(tmp_path, work[:7], finish=False)  # a snapshot and six request records, no clean stop
    journal = bytearray((tmp_path / JOURNAL).read_bytes())
    second = journal.index(b"\n") + 1
    journal[second + 40] ^= 0x01  # one flipped byte inside the second line
    (tmp_path / JOURNAL).write_bytes(journal)
    before = tree(tmp_path)
    with pytest.raises(JournalDamaged, match=r"is damaged: record 2 \(byte \d+\) is damaged and intact records follow"):
        Writer(tmp_path, POLICY).start()
    assert tree(tmp_path) == before


def test_the_journal_is_compacted_by_size_too(tmp_path):
    """Requests spanning many windows write records of kilobytes: the journal stays bounded."""
    limit = 64 * 1024
    writer = Writer(tmp_path, POLICY, fsync=False, compact_bytes=limit)
    writer.start()
    largest = 0
    for i in range(100):
        times = [(i * 20 + w) * 10 * 60 * 10**9 for w in range(20)]  # 20 windows in one request
        writer.apply(times, Rows.from_lines([f"r{i}-{w}" for w in range(20)]), key=f"k{i}")
        largest = max(largest, (tmp_path / JOURNAL).stat().st_size)
    writer.close()
    assert largest < limit + 4096  # at most one record past the limit before it is compacted
    assert len(csv_files(tmp_path)) == 100 * 20 - 1


def test_a_failing_compaction_is_said_once_and_its_recovery_too(tmp_path, monkeypatch, caplog):
    """Compaction is retried after every round while it fails: one error line, not one a round."""
    caplog.set_level(logging.INFO, logger="batched_event_api")
    writer = Writer(tmp_path, POLICY, fsync=False, compact_bytes=256)
    writer.start()
    real_replace = writer.journal.replace
    failing = [True]

    def replace(snapshot):
        if failing[0]:
            raise OSError(28, "No space left on device")
        real_replace(snapshot)

    monkeypatch.setattr(writer.journal, "replace", replace)
    work = batches(n=40)
    for times, rows in work[:10]:
        writer.apply(times, rows)
    failing[0] = False
    for times, rows in work[10:12]:
        writer.apply(times, rows)
    writer.close()
    said = [r.getMessage() for r in caplog.records if "compaction" in r.getMessage()]
    assert len(said) == 2 and "compaction failed" in said[0] and "works again" in said[1]


def test_recovery_removes_only_the_writers_own_stray_part_files(tmp_path):
    """Part files of rounds never committed go at the start, named as the writer names them; what
    merely ends in .inprogress (another program's download, a directory) is not the writer's and
    stays, and does not stop the start."""
    strays = [".user-events-20240701-020304.inprogress", ".user-events-20240701-020304-1.00112233445566aa.inprogress"]
    others = ["download.inprogress", ".download.inprogress", ".user-events-x.inprogress"]
    for name in strays + others:
        (tmp_path / name).write_bytes(b"x\n")
    (tmp_path / "keep.inprogress").mkdir()
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress")) == sorted(
        [*others, "keep.inprogress"]
    )
