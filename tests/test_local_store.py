"""A directory as a Store (output/local.py): create only if the name is free, durably, never
through a symlink; identity from the record kept with the file (extended attributes, or a file
beside it where the filesystem has none)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import socket
import stat
import subprocess
import sys

import pytest

from batched_event_api.output import local
from batched_event_api.output.local import LocalDirectory
from batched_event_api.output.store import Finished, Identity, StoreError, publish
from servers import AS_A_USER

ROW = b"2024-07-01T02:00:00Z,,1,false,,,,0\n"


def _window(data: bytes, window_id: str | None = "00112233445566aa", *, whole: bool = True) -> Finished:
    return Finished(io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), window_id, data if whole else None)


@pytest.fixture(params=["xattrs", "no-xattrs"])
def store(request, tmp_path, monkeypatch) -> LocalDirectory:
    if request.param == "no-xattrs":  # a filesystem without user extended attributes

        def unsupported(*args: object) -> None:
            raise OSError(errno.ENOTSUP, "Operation not supported")

        monkeypatch.setattr(local.os, "setxattr", unsupported)
        monkeypatch.setattr(local.os, "getxattr", unsupported)
    out = tmp_path / "out"
    out.mkdir()
    return LocalDirectory(out)


def _visible(store: LocalDirectory) -> list[str]:
    return sorted(name for name in os.listdir(store.directory) if not name.startswith("."))


def test_a_create_takes_a_free_name_once_and_says_whose_it_is(store):
    window = _window(ROW)
    assert store.create("w.csv", window)
    assert (store.directory / "w.csv").read_bytes() == ROW
    assert stat.S_IMODE((store.directory / "w.csv").stat().st_mode) == 0o600
    assert store.identity("w.csv") == Identity(len(ROW), window.sha256, "00112233445566aa")
    assert not store.create("w.csv", _window(b"other\n", "ffffffffffffffff"))
    assert (store.directory / "w.csv").read_bytes() == ROW
    assert store.identity("nothing.csv") is None
    assert _visible(store) == ["w.csv"]
    assert not [n for n in os.listdir(store.directory) if n.endswith(".tmp")]  # no temporary file left


def test_a_window_streamed_from_its_file_and_one_without_an_id(store):
    data = ROW * 100_000
    assert store.create("big.csv", _window(data, None, whole=False))
    assert (store.directory / "big.csv").read_bytes() == data
    assert store.identity("big.csv") == Identity(len(data), hashlib.sha256(data).hexdigest(), None)


def test_publish_knows_its_own_earlier_create_and_steps_past_another_file(store):
    window = _window(ROW)
    assert publish(store, "w", ".csv", window) == ("w.csv", "created")
    window.file.seek(0)
    assert publish(store, "w", ".csv", window) == ("w.csv", "already_there")
    (store.directory / "x.csv").write_bytes(ROW)  # another program's file, the same bytes
    assert publish(store, "x", ".csv", _window(ROW, None)) == ("x-1.csv", "next_name")


def test_a_symlink_at_the_name_is_neither_followed_nor_taken_for_the_window(store, tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"not the window's\n")
    (store.directory / "w.csv").symlink_to(target)
    (store.directory / "dangling.csv").symlink_to(tmp_path / "nowhere")
    assert not store.create("w.csv", _window(ROW))
    assert not store.create("dangling.csv", _window(ROW))
    assert target.read_bytes() == b"not the window's\n" and not (tmp_path / "nowhere").exists()
    assert store.identity("w.csv").sha256 is None  # type: ignore[union-attr]
    assert publish(store, "w", ".csv", _window(ROW)) == ("w-1.csv", "next_name")


def test_a_failing_directory_is_a_store_error_and_a_name_must_be_plain(store):
    os.rmdir(store.directory)
    with pytest.raises(StoreError):
        store.create("w.csv", _window(ROW))
    with pytest.raises(StoreError):
        store.identity("w.csv")
    # A prefix of sub-directories is allowed (--partition), but no hidden, empty or parent part.
    for name in (".hidden.csv", "", "/b.csv", "a//b.csv", "a/../b.csv", "../b.csv", "a/.b/c.csv", "a/b.csv/"):
        with pytest.raises(ValueError):
            store.create(name, _window(ROW))


def test_a_file_whose_attributes_this_store_did_not_write_is_another_windows(tmp_path):
    """Attributes under the store's names that are not what it writes (bytes that are no text,
    left by another tool or a copy) make the file another program's: publish steps past it
    to the next name rather than failing on it at every retry."""
    out = tmp_path / "out"
    out.mkdir()
    store = LocalDirectory(out)
    for name, attribute in (("w.csv", local.SHA256_ATTRIBUTE), ("x.csv", local.WINDOW_ID_ATTRIBUTE)):
        (out / name).write_bytes(ROW)
        os.setxattr(out / name, local.SHA256_ATTRIBUTE, b"0" * 64)
        os.setxattr(out / name, attribute, b"\xff\xfe not text")
        assert store.identity(name) == Identity(len(ROW), None, None)
    assert publish(store, "w", ".csv", _window(ROW)) == ("w-1.csv", "next_name")
    assert publish(store, "x", ".csv", _window(ROW)) == ("x-1.csv", "next_name")


def test_a_file_the_store_cannot_read_is_another_programs_and_publish_steps_past_it(tmp_path):
    """Another user's file at a window's name, unreadable to the server (its own are always
    readable by it): not the window's, so the window takes the next name instead of failing at
    every retry. Run as a user (root reads anything)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "w.csv").write_bytes(b"someone else's\n")
    os.chmod(out / "w.csv", 0)
    script = f"""
import hashlib, io
from pathlib import Path
from batched_event_api.output.local import LocalDirectory
from batched_event_api.output.store import Finished, publish
row = {ROW!r}
store = LocalDirectory(Path({str(out)!r}))
print(store.identity("w.csv"))
print(publish(store, "w", ".csv", Finished(io.BytesIO(row), len(row), hashlib.sha256(row).hexdigest(), "00112233445566aa", row)))
"""
    done = subprocess.run([*AS_A_USER, sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Identity(size=15, sha256=None, window_id=None)",
        "('w-1.csv', 'next_name')",
    ]
    assert (out / "w-1.csv").read_bytes() == ROW


PREFIX = "dt=2024-07-01/hour=02/"


@pytest.mark.parametrize(("file_mode", "directory_mode"), [(0o600, 0o700), (0o640, 0o750)])
def test_sub_directories_of_a_prefix_are_made_with_the_files_mode_and_x_where_it_reads(
    tmp_path, file_mode, directory_mode
):
    out = tmp_path / "out"
    out.mkdir()
    os.umask(old := os.umask(0))  # read the umask: the test's modes are before it
    try:
        store = LocalDirectory(out, mode=file_mode)
        assert store.identity(PREFIX + "w.csv") is None  # no directory made by a look
        assert not (out / "dt=2024-07-01").exists()
        assert store.create(PREFIX + "w.csv", _window(ROW))
    finally:
        os.umask(old)
    for directory in (out / "dt=2024-07-01", out / "dt=2024-07-01" / "hour=02"):
        assert stat.S_IMODE(directory.stat().st_mode) == directory_mode
    assert stat.S_IMODE((out / PREFIX / "w.csv").stat().st_mode) == file_mode
    assert (out / PREFIX / "w.csv").read_bytes() == ROW
    assert store.identity(PREFIX + "w.csv") == Identity(len(ROW), hashlib.sha256(ROW).hexdigest(), "00112233445566aa")
    assert sorted(os.listdir(out / PREFIX)) == ["w.csv"]  # no temporary file left in the partition


def test_each_new_directory_and_its_parent_are_synced_before_the_window_is_linked(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    store = LocalDirectory(out)
    events: list[object] = []
    real_fsync, real_link, real_mkdir = os.fsync, os.link, os.mkdir

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync", (info.st_dev, info.st_ino)))
        real_fsync(fd)

    def link(*args: object, **kwargs: object) -> None:
        events.append("link")
        real_link(*args, **kwargs)  # type: ignore[arg-type]

    def mkdir(name: str, *args: object, **kwargs: object) -> None:
        events.append(("mkdir", name))
        real_mkdir(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local.os, "fsync", fsync)
    monkeypatch.setattr(local.os, "link", link)
    monkeypatch.setattr(local.os, "mkdir", mkdir)
    assert store.create(PREFIX + "w.csv", _window(ROW))
    inode = {path: (os.stat(path).st_dev, os.stat(path).st_ino) for path in (out, out / "dt=2024-07-01", out / PREFIX)}
    before_link = events[: events.index("link")]
    assert [e for e in before_link if e[0] == "mkdir"] == [("mkdir", "dt=2024-07-01"), ("mkdir", "hour=02")]
    synced = [e[1] for e in before_link if e[0] == "fsync"]
    for new, parent in ((out / "dt=2024-07-01", out), (out / PREFIX, out / "dt=2024-07-01")):
        assert inode[new] in synced and inode[parent] in synced
    assert events[-1] == ("fsync", inode[out / PREFIX])  # the name itself durable before True
    # A second window in the same partition syncs only its own directory's entry (known durable).
    events.clear()
    assert store.create(PREFIX + "x.csv", _window(ROW, "ffffffffffffffff"))
    assert [e for e in events if e != "link" and e[0] == "mkdir"] == []
    assert inode[out] not in [e[1] for e in events if e != "link"]


def test_a_directory_made_by_an_earlier_run_is_synced_once_before_use(tmp_path, monkeypatch):
    """A crash between its mkdir and the sync of its parent: the next run syncs it before it
    links a window in it (a released window must not hang on an entry a power cut can take)."""
    out = tmp_path / "out"
    (out / PREFIX).mkdir(parents=True)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", fsync)
    assert LocalDirectory(out).create(PREFIX + "w.csv", _window(ROW))
    for path in (out, out / "dt=2024-07-01"):
        assert (os.stat(path).st_dev, os.stat(path).st_ino) in synced


@pytest.mark.parametrize("planted", ["symlink", "file", "fifo", "socket"])
def test_a_link_or_a_file_at_a_partition_directory_is_not_followed(tmp_path, planted):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "hour=02").mkdir(parents=True)
    if planted == "symlink":
        (out / "dt=2024-07-01").symlink_to(elsewhere)
    elif planted == "fifo":  # never opened for reading: that would wait for a writer
        os.mkfifo(out / "dt=2024-07-01")
    elif planted == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(out / "dt=2024-07-01"))
        listener.close()
    else:
        (out / "dt=2024-07-01").write_bytes(b"not a directory\n")
    store = LocalDirectory(out)
    with pytest.raises(StoreError, match="not followed"):
        store.create(PREFIX + "w.csv", _window(ROW))
    with pytest.raises(StoreError, match="not followed"):
        store.identity(PREFIX + "w.csv")
    assert sorted(os.listdir(elsewhere / "hour=02")) == []  # nothing went through the link
    os.unlink(out / "dt=2024-07-01")  # removed by its owner: the window goes in
    assert publish(store, "dt=2024-07-01/hour=02/w", ".csv", _window(ROW)) == (PREFIX + "w.csv", "created")
    assert (out / PREFIX / "w.csv").read_bytes() == ROW


def test_temporary_files_a_killed_create_left_are_removed_and_no_live_ones(tmp_path):
    """A create killed (SIGKILL, OOM) between its temporary file and the link leaves it, as big as
    the window, in the output: the first create in that directory removes the ones no live create
    holds (each holds a lock on its own), and nothing else."""
    store = LocalDirectory(tmp_path)
    (tmp_path / "dt=2024").mkdir()
    stale = [
        ".user-events-20240701-020000.parquet.0123456789abcdef.tmp",
        "dt=2024/.user-events-x.csv.fedcba9876543210.tmp",
    ]
    for name in stale:
        (tmp_path / name).write_bytes(b"PAR1 half")
        os.utime(tmp_path / name, (1e9, 1e9))  # left long ago
    kept = [
        "dt=2024/.user-events-n.csv.3333333333333333.tmp",  # new: perhaps another server's, not locked yet
        "dt=2024/.user-events-y.csv.00000000000000ff.tmp",  # a live create's: locked
        ".other.0123456789abcdef.tmp",  # not named as this store names its own
        "dt=2024/.user-events-z.csv.1111111111111111.tmp",  # a directory: not a file this store made
        "dt=2024/.user-events-f.csv.2222222222222222.tmp",  # a FIFO: neither waited on nor removed
    ]
    (tmp_path / kept[3]).mkdir()
    os.mkfifo(tmp_path / kept[4])
    (tmp_path / kept[0]).write_bytes(b"PAR1 half")
    (tmp_path / kept[2]).write_bytes(b"keep")
    live = os.open(tmp_path / kept[1], os.O_WRONLY | os.O_CREAT, 0o600)
    os.utime(tmp_path / kept[1], (1e9, 1e9))  # a long create's: old, but locked
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        assert store.create("user-events-20240701-020000.csv", _window(b"a\n"))
        assert store.create("dt=2024/user-events-20240701-020000.csv", _window(b"b\n"))
    finally:
        os.close(live)
    for name in stale:
        assert not (tmp_path / name).exists(), name
    for name in kept:
        assert (tmp_path / name).exists(), name


def test_the_record_beside_a_killed_creates_temporary_file_goes_with_it(tmp_path):
    """Without extended attributes a create records the window beside its temporary file, keyed
    by its inode, before the link: removed with the file, else a file later given that inode at
    the window's name would be taken for the window's own create."""
    temporary = tmp_path / ".user-events-20240701-020000.csv.0123456789abcdef.tmp"
    temporary.write_bytes(b"half")
    os.utime(temporary, (1e9, 1e9))
    record = tmp_path / f".user-events-20240701-020000.csv.{temporary.stat().st_ino}.identity"
    record.write_bytes(b"ab" * 32 + b" 00112233445566aa\n")
    other = tmp_path / ".user-events-20240701-020000.csv.1.identity"  # another inode's: kept
    other.write_bytes(b"x")
    assert LocalDirectory(tmp_path).create("user-events-20240701-020500.csv", _window(b"a\n"))
    assert not temporary.exists() and not record.exists() and other.exists()


def test_the_sweep_never_takes_a_live_creates_file_before_its_lock(tmp_path, monkeypatch):
    """Between a create's open of its temporary file and its lock, another create's first sweep
    of that directory (another thread, another server) must not take the file for a leftover."""
    real_flock = fcntl.flock
    swept = []

    def flock_after_a_sweep(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not swept:  # a create's lock of its new file
            swept.append(True)
            assert LocalDirectory(tmp_path).create("dt=2024/user-events-20240701-020500.csv", _window(b"b\n"))
        real_flock(fd, operation)

    monkeypatch.setattr(local.fcntl, "flock", flock_after_a_sweep)
    assert LocalDirectory(tmp_path).create("dt=2024/user-events-20240701-020000.csv", _window(b"a\n"))
    assert sorted(os.listdir(tmp_path / "dt=2024")) == [
        "user-events-20240701-020000.csv",
        "user-events-20240701-020500.csv",
    ]
