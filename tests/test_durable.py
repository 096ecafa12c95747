"""LocalDisk.write_and_sync: a commit round's writes and syncs, in C where it was compiled (the GIL
released once), else step by step in Python. Both give the same bytes and the same errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batched_event_api.commit import disk as disk_module
from batched_event_api.commit.disk import LocalDisk

chunks = st.lists(st.binary(max_size=300), max_size=8)
writes = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5000), chunks), max_size=6)


class StepByStep(LocalDisk):
    """The Python steps (a subclass that replaces a step is never given the C twin)."""

    def write(self, fd, chunks, offset):  # noqa: ANN001, ANN201
        return super().write(fd, chunks, offset)


def _apply(disk: LocalDisk, directory: Path, plan: list[tuple[int, int, list[bytes]]]) -> list[bytes]:
    fds = [os.open(directory / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(3)]
    try:
        disk.write_and_sync([(fds[f], offset, data) for f, offset, data in plan], fds, True)
    finally:
        for fd in fds:
            os.close(fd)
    return [(directory / f"f{i}").read_bytes() for i in range(3)]


@settings(max_examples=60, deadline=None)
@given(plan=writes)
def test_the_c_twin_writes_the_bytes_the_python_steps_write(tmp_path_factory, plan):
    results = []
    for cls in (LocalDisk, StepByStep):
        directory = tmp_path_factory.mktemp(cls.__name__)
        disk = cls(directory)
        disk.open()
        try:
            results.append(_apply(disk, directory, plan))
        finally:
            disk.close()
    assert results[0] == results[1]


def test_more_chunks_than_one_pwritev_takes_all_land_in_order(tmp_path):
    disk = LocalDisk(tmp_path)
    disk.open()
    pieces = [b"%05d," % i for i in range(3000)]  # 3,000 buffers: three pwritev calls (IOV_MAX 1024)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    disk.write_and_sync([(fd, 7, [memoryview(p) for p in pieces])], [fd], True)
    os.close(fd)
    disk.close()
    assert (tmp_path / "f").read_bytes() == b"\0" * 7 + b"".join(pieces)


@pytest.mark.parametrize("cls", [LocalDisk, StepByStep])
def test_the_first_error_is_raised_with_its_errno_and_stops_what_follows(tmp_path, cls):
    disk = cls(tmp_path)
    disk.open()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    read_only = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as refused:  # the second write: a descriptor not open for writing; no sync
            disk.write_and_sync([(fd, 0, [b"first"]), (read_only, 5, [b"x"]), (fd, 5, [b"never"])], [fd], False)
        assert refused.value.errno == errno.EBADF
        assert (tmp_path / "f").read_bytes() == b"first"
        reader, writer = os.pipe()  # fdatasync of a pipe: EINVAL, after every write was done
        try:
            with pytest.raises(OSError) as unsyncable:
                disk.write_and_sync([(fd, 5, [b"second"])], [reader, fd], False)
            assert unsyncable.value.errno == errno.EINVAL
            assert (tmp_path / "f").read_bytes() == b"firstsecond"
        finally:
            os.close(reader)
            os.close(writer)
    finally:
        os.close(fd)
        os.close(read_only)
        disk.close()


def test_the_c_twin_is_built():
    try:  # built, whether BEA_NATIVE switches it off or not
        from batched_event_api.commit import _durable
    except ImportError:
        _durable = None
    assert _durable is not None, "batched_event_api.commit._durable is not built: is a C compiler installed?"


def test_the_c_twin_is_used_where_it_was_built_and_a_replaced_step_turns_it_off(tmp_path, monkeypatch):
    calls: list[str] = []
    disk = LocalDisk(tmp_path)
    disk.open()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    if disk_module._durable is not None:
        monkeypatch.setattr(disk_module._durable, "write_and_sync", lambda *a: calls.append("c"))
        disk.write_and_sync([(fd, 0, [b"a"])], [fd], False)
        assert calls == ["c"]
    monkeypatch.setattr(disk, "sync_data", lambda fd: calls.append("python"))
    disk.write_and_sync([(fd, 0, [b"a"])], [fd], False)
    assert calls[-1] == "python" and (tmp_path / "f").read_bytes() == b"a"
    os.close(fd)
    disk.close()


_TRACED = """
import os, sys
from batched_event_api.commit.disk import LocalDisk, _durable
assert _durable is not None
disk = LocalDisk(sys.argv[1]); disk.open()
rows = os.open(os.path.join(sys.argv[1], "rows"), os.O_RDWR | os.O_CREAT, 0o600)
journal = os.open(os.path.join(sys.argv[1], "journal"), os.O_RDWR | os.O_CREAT, 0o600)
print(rows, journal, disk._dir_fd, flush=True)
disk.write_and_sync([(rows, 0, [b"a,", b"b\\n"]), (journal, 0, [b"record\\n"])], [rows, journal], {directory})
"""


@pytest.mark.parametrize("directory", [True, False])
def test_the_c_twin_syncs_every_file_it_is_given_and_the_directory_after_every_write(tmp_path, directory):
    """Seen from the kernel (strace): both writes, then an fdatasync of each file and an fsync of
    the directory when asked (side by side, in any order), and nothing else on these descriptors.
    A power-cut test double cannot see this: it replaces the steps, so takes the Python ones."""
    import re
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (make test installs it: apt-get install strace)"
    trace = tmp_path / "trace"
    out = subprocess.run(
        [strace, "-f", "-o", str(trace), "-e", "trace=pwritev,pwritev2,pwrite64,write,fdatasync,fsync,syncfs"]
        + [sys.executable, "-c", _TRACED.format(directory=directory), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BEA_NATIVE": "1"},  # the C twin itself, also under `make python-path`
    ).stdout
    rows, journal, dir_fd = map(int, out.split())
    names = {rows: "rows", journal: "journal", dir_fd: "directory"}
    calls = []
    for line in trace.read_text().splitlines():
        if (match := re.search(r"(\w+)\((\d+)", line)) and int(match.group(2)) in names:
            calls.append((match.group(1), names[int(match.group(2))]))
    assert calls[:2] == [("pwritev", "rows"), ("pwritev", "journal")]
    syncs = [("fdatasync", "rows"), ("fdatasync", "journal")] + ([("fsync", "directory")] if directory else [])
    assert sorted(calls[2:]) == sorted(syncs)
    assert (tmp_path / "rows").read_bytes() == b"a,b\n" and (tmp_path / "journal").read_bytes() == b"record\n"


def test_the_c_twin_syncs_hundreds_of_files_on_at_most_32_threads(tmp_path):
    """A round may name hundreds of files (--sync-many per-file, a request of many windows):
    every one is synced once, on a bounded number of threads."""
    import re
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (make test installs it: apt-get install strace)"
    script = (
        "import os, sys\n"
        "from batched_event_api.commit.disk import LocalDisk\n"
        "disk = LocalDisk(sys.argv[1]); disk.open()\n"
        "fds = [os.open(os.path.join(sys.argv[1], f'f{i}'), os.O_RDWR | os.O_CREAT, 0o600) for i in range(200)]\n"
        "print(*fds, flush=True)\n"
        "disk.write_and_sync([(fd, 0, [b'x']) for fd in fds], fds, True)\n"
    )
    trace = tmp_path / "trace"
    out = subprocess.run(
        [
            strace,
            "-f",
            "-o",
            str(trace),
            "-e",
            "trace=clone,clone3,fdatasync",
            sys.executable,
            "-c",
            script,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BEA_NATIVE": "1"},
    ).stdout
    fds = sorted(map(int, out.split()))
    text = trace.read_text()
    synced = sorted(int(fd) for fd in re.findall(r"fdatasync\((\d+)", text))
    threads = len(re.findall(r"\bclone3?\(", text))
    assert synced == fds  # each of the 200 files once
    assert 1 <= threads <= 31, threads  # side by side, the calling thread and at most 31 more
