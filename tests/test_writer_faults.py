"""The writer under the faults a review reproduced (issue 19): each test failed before its fix.

A round cut by a crash with fsync off, a round that fails with a non-storage error, a file of
another program at a window's final name, a bit flipped in the journal, a failed round's record
after a power cut, a full disk at start, symlinks in the directory, and the files' modes.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest

from batched_event_api.commit.disk import GROUP_FILE_MODE, LocalDisk
from batched_event_api.commit.journal import JOURNAL, Journal
from batched_event_api.commit.partfiles import part_name
from batched_event_api.commit.windows import WindowPolicy
from batched_event_api.commit.writer import Request, Writer
from batched_event_api.events.rows import Rows
from batched_event_api.events.transcode import Batch, transcode
from model import MINUTE
from powercut import PowerCutDisk
from snapshots import committed_rows, csv_files
from writer_setup import POLICY, T0, Crash


def body_rows(times: list[int], tag: str = "e") -> Rows:
    return Rows.from_lines([f"{tag}{i},{t}" for i, t in enumerate(times)])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fsync_never_a_crash_mid_round_leaves_no_replay_without_its_rows(tmp_path, monkeypatch):
    """A 3.6 MB keyed request, the process killed while its part file is half written: the
    resend must not be told 'replay' unless every row is there."""
    events = 16_000
    lines = [
        f'{{"time":"2027-01-15T08:{i // 600 % 5:02d}:{i // 10 % 60:02d}.{i % 10}Z","id":{i},'
        f'"email":"{"x" * 180}@example.com"}}'
        for i in range(events)
    ]
    prepared = transcode(("\n".join(lines) + "\n").encode(), max_line=1 << 20)
    assert len(prepared.rows) == events and sum(map(len, prepared.rows.chunks(0, events))) >= 1 << 20
    writer = Writer(tmp_path, POLICY, fsync=False)
    writer.start()
    real_write = LocalDisk.write
    journal_written = []

    def half_then_die(self, fd, chunks, offset):
        if fd == writer.journal.fd:
            journal_written.append(True)
            return real_write(self, fd, chunks, offset)
        data = b"".join(bytes(c) for c in chunks)
        real_write(self, fd, [data[: len(data) // 2 + 7]], offset)  # half, ending mid-row
        raise Crash

    monkeypatch.setattr(LocalDisk, "write", half_then_die)
    with pytest.raises(Crash):
        writer.apply(prepared.times, prepared.rows, key="big")
    monkeypatch.setattr(LocalDisk, "write", real_write)
    writer.close()  # the process is gone

    again = Writer(tmp_path, POLICY, fsync=False)
    again.start()
    resent = again.apply(prepared.times, prepared.rows, key="big")
    again.commit_open()
    again.close()
    rows = committed_rows(tmp_path)
    assert not journal_written or not resent.replay  # the record never outran its rows
    assert len(rows) == events and len(set(rows)) == events  # every row once, no half row


def test_fsync_never_recovery_rolls_back_a_record_whose_rows_are_short(tmp_path):
    writer = Writer(tmp_path, POLICY, fsync=False)
    writer.start()
    writer.apply([T0], body_rows([T0], "a"), key="a")
    writer.apply([T0 + 1], body_rows([T0 + 1], "b"), key="b")
    name = writer.open.name
    writer.close()
    part = tmp_path / part_name(name)
    os.truncate(part, part.stat().st_size - 3)  # b's round: its record there, its rows not whole
    again = Writer(tmp_path, POLICY, fsync=False)
    again.start()
    assert "b" not in again.keys and "a" in again.keys
    assert not again.apply([T0 + 1], body_rows([T0 + 1], "b"), key="b").replay
    again.commit_open()
    again.close()
    assert committed_rows(tmp_path) == ["a0," + str(T0), "b0," + str(T0 + 1)]


def test_a_round_failing_with_any_error_leaves_the_state_of_the_last_record(tmp_path, monkeypatch):
    """Round [A, B]: A appends to the open window and opens 299 windows (the 256-file flush
    writes them), B fails with an error that is not a storage error. Both are refused, and
    nothing of A may ever be committed, nor a descriptor or a part file left behind."""
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([T0], body_rows([T0], "ok"), key="ok")
    open_size = writer.open.size
    fds = open_fds()
    a_times = [T0 + 1] + [T0 + (i + 1) * 10 * MINUTE for i in range(299)]
    real_plan = WindowPolicy.plan
    calls = []

    def plan_then_fail(self, open_start, times):
        calls.append(1)
        if len(calls) == 2:
            raise OverflowError("int too big to convert")
        return real_plan(self, open_start, times)

    monkeypatch.setattr(WindowPolicy, "plan", plan_then_fail)
    with pytest.raises(OverflowError):
        writer.apply_group(
            [Request(Batch(a_times, body_rows(a_times, "A")), "A"), Request(Batch([T0 + 2], body_rows([T0 + 2], "B")))]
        )
    monkeypatch.setattr(WindowPolicy, "plan", real_plan)
    assert open_fds() <= fds
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress")) == [part_name(writer.open.name)]
    assert (tmp_path / part_name(writer.open.name)).stat().st_size == open_size
    assert "A" not in writer.keys
    # The writer goes on from the last record: the next window published holds no row of A.
    writer.apply([T0 + 3], body_rows([T0 + 3], "next"))
    writer.commit_open()
    writer.close()
    rows = committed_rows(tmp_path)
    assert rows == [f"ok0,{T0}", f"next0,{T0 + 3}"]


def test_a_foreign_file_at_a_windows_name_never_makes_recovery_drop_acknowledged_rows(tmp_path, caplog):
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([T0], body_rows([T0], "w"), key="w1")
    window = writer.open.name
    (tmp_path / window).write_text("foreign,file\n")  # another program takes W's final name
    times = [T0 + 1, T0 + 10 * MINUTE]  # appends to W and opens X: W is published elsewhere
    with caplog.at_level(logging.WARNING):
        writer.apply(times, body_rows(times, "x"), key="x1")
    assert "held by a file this server did not write" in caplog.text
    writer.close()  # SIGKILL: no final commit

    again = Writer(tmp_path, POLICY)
    again.start()
    assert {"w1", "x1"} <= set(again.keys)
    assert again.apply(times, body_rows(times, "x"), key="x1").replay
    again.commit_open()
    again.close()
    files = {name: data.decode() for name, data in csv_files(tmp_path).items()}
    assert files[window] == "foreign,file\n"  # untouched
    stem = window.removesuffix(".csv")
    assert files[f"{stem}-1.csv"] == f"w0,{T0}\nx0,{T0 + 1}\n"
    assert [row for name, text in files.items() if name != window for row in text.splitlines()] == [
        f"w0,{T0}",
        f"x0,{T0 + 1}",
        f"x1,{T0 + 10 * MINUTE}",
    ]


def test_a_complete_journal_record_that_fails_its_check_is_reported_and_kept_aside(tmp_path, caplog):
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([T0], body_rows([T0], "a"), key="a")
    writer.apply([T0 + 1], body_rows([T0 + 1], "b"), key="b")
    writer.close()
    journal = tmp_path / JOURNAL
    data = bytearray(journal.read_bytes())
    last = data.rindex(b"\n", 0, len(data) - 1) + 1
    data[last + 20] ^= 0x01  # one flipped bit in the last record, its newline intact
    journal.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        again = Writer(tmp_path, POLICY)
        again.start()
    again.close()
    assert "complete but fails its checksum" in caplog.text
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(JOURNAL + ".damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(data)


def test_a_round_refused_after_its_record_was_synced_never_comes_back_at_a_power_cut(tmp_path, monkeypatch):
    """The round's rows and record are synced, then the directory's sync (asked for because a
    window was published) fails: the request is answered 503, so a power cut must not bring it back."""
    disk = PowerCutDisk(tmp_path)
    writer = Writer(tmp_path, POLICY, disk=disk)
    writer.start()
    later = T0 + 10 * MINUTE
    writer.apply([T0], body_rows([T0], "a"))
    writer.apply([later], body_rows([later], "b"))  # publishes a's window, opens b's
    real = PowerCutDisk.sync_directory

    def directory_fails(self):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(PowerCutDisk, "sync_directory", directory_fails)
    with pytest.raises(Exception, match="I/O error"):
        writer.apply([later + 1], body_rows([later + 1], "refused"))
    monkeypatch.setattr(PowerCutDisk, "sync_directory", real)
    disk.power_cut()
    writer.close()
    again = Writer(tmp_path, POLICY, disk=PowerCutDisk(tmp_path))
    again.start()
    again.commit_open()
    again.close()
    assert committed_rows(tmp_path) == [f"a0,{T0}", f"b0,{later}"]  # the refused request is not there


def test_a_full_disk_at_start_starts_in_place_and_leaves_no_temporary_journal(tmp_path, monkeypatch, caplog):
    writer = Writer(tmp_path, POLICY)
    writer.start()
    writer.apply([T0], body_rows([T0], "a"), key="a")
    writer.close()  # a crash; the disk is full when the server comes back
    real = LocalDisk.write

    def full(self, fd, chunks, offset):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".journal.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fd, chunks, offset)

    monkeypatch.setattr(LocalDisk, "write", full)
    with caplog.at_level(logging.WARNING):
        again = Writer(tmp_path, POLICY)
        again.start()
    assert "could not compact the journal" in caplog.text
    assert not (tmp_path / ".journal.tmp").exists()
    assert again.healthy and "a" in again.keys
    monkeypatch.setattr(LocalDisk, "write", real)
    assert again.apply([T0 + 1], body_rows([T0 + 1], "a"), key="a").replay
    again.apply([T0 + 2], body_rows([T0 + 2], "b"), key="b")
    again.close()
    third = Writer(tmp_path, POLICY)
    third.start()
    third.commit_open()
    third.close()
    assert committed_rows(tmp_path) == [f"a0,{T0}", f"b0,{T0 + 2}"]


def test_symlinks_in_the_directory_are_never_written_through(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    targets = {name: elsewhere / name for name in ("part", "tmp", "journal")}
    for target in targets.values():
        target.write_text("precious\n")
    writer = Writer(out, POLICY)
    writer.start()
    writer.apply([T0], body_rows([T0], "a"))
    writer.close()
    # At the part file of the next window, and at the journal's temporary name.
    later = T0 + 10 * MINUTE
    nxt = writer.parts.name_for(later, set())
    os.symlink(targets["part"], out / part_name(nxt))
    os.symlink(targets["tmp"], out / ".journal.tmp")
    again = Writer(out, POLICY)
    again.start()  # the start-up snapshot goes through .journal.tmp
    again.apply([later], body_rows([later], "b"))
    again.commit_open()
    again.close()
    assert all(t.read_text() == "precious\n" for t in targets.values())
    assert not any(p.is_symlink() for p in out.iterdir())
    assert committed_rows(out) == [f"a0,{T0}", f"b0,{later}"]
    # A symlink in place of the journal is refused, not followed.
    (out / JOURNAL).unlink()
    os.symlink(targets["journal"], out / JOURNAL)
    with pytest.raises(OSError):
        Writer(out, POLICY).start()
    assert targets["journal"].read_text() == "precious\n"


@pytest.mark.parametrize("mode", [None, GROUP_FILE_MODE])
def test_files_are_readable_by_their_owner_only_unless_asked(tmp_path, mode):
    old = os.umask(0o022)
    try:
        writer = Writer(tmp_path / "out", POLICY, **({"file_mode": mode} if mode else {}))
        writer.start()
        writer.apply([T0], body_rows([T0], "a"), key="secret-key")
        writer.apply([T0 + 10 * MINUTE], body_rows([T0 + 10 * MINUTE], "b"))
        writer.close()
    finally:
        os.umask(old)
    files = list((tmp_path / "out").iterdir())
    assert {p.name.rsplit("-", 1)[0] for p in files if p.name.endswith(".csv")}  # a finished window too
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == (mode or 0o600), path.name
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == (0o750 if mode else 0o700)


def test_journal_reads_through_no_symlink(tmp_path):
    (tmp_path / "target").write_bytes(b"x")
    os.symlink(tmp_path / "target", tmp_path / JOURNAL)
    disk = LocalDisk(tmp_path)
    disk.open()
    with pytest.raises(OSError):
        Journal(tmp_path, disk, fsync=True).read()
    disk.close()
