"""A disk double that loses, at a simulated power cut, whatever was written but not synced.

It works on a real directory: writes, creations and renames land there as they would in the
page cache (a SIGKILL keeps them). Beside it, it keeps what POSIX promises survives a power cut:
a file's bytes as of its last fdatasync (or syncfs), and the directory's names as of its last
fsync (or syncfs). `power_cut()` puts the directory back to exactly that. It can also stop the
process (raise Crash) at its N-th write or sync, the instants the commit protocol is made of.
"""

from __future__ import annotations

import collections
import os
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from batched_event_api.commit.disk import LocalDisk
from writer_setup import Crash


class PowerCutDisk(LocalDisk):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.calls = 0  # writes and syncs so far
        self.crash_at: int | None = None  # the call that raises Crash
        self.crashes = 0
        self.landed: collections.Counter[str] = collections.Counter()  # writer functions a crash stopped
        self._lock = threading.Lock()  # large requests write and sync on several threads
        self._settle()

    @property
    def has_syncfs(self) -> bool:
        return True

    def _settle(self) -> None:
        """Everything in the directory now is durable."""
        self._names: dict[str, int] = {}
        self._data: dict[int, bytes] = {}
        self._modes: dict[int, int] = {}  # permissions, durable with the file's name
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                try:
                    data = Path(entry.path).read_bytes()
                    self._modes[entry.inode()] = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                except FileNotFoundError:  # removed meanwhile (the uploader, on its own thread)
                    continue
                self._names[entry.name] = entry.inode()
                self._data[entry.inode()] = data

    def _step(self) -> None:
        with self._lock:
            self.calls += 1
            if self.calls == self.crash_at:
                self.crash_at = None
                self.crashes += 1
                self.landed.update(_writer_frames())
                raise Crash

    def write(self, fd: int, chunks: Sequence[bytes | memoryview], offset: int) -> None:
        self._step()
        super().write(fd, chunks, offset)

    def sync_data(self, fd: int) -> None:
        self._step()
        with open(f"/proc/self/fd/{fd}", "rb") as f:  # fd itself may be write-only
            data = f.read()
        with self._lock:
            self._data[os.fstat(fd).st_ino] = data

    def sync_directory(self) -> None:
        self._step()
        with self._lock:
            self._names = self._current()

    def sync_filesystem(self) -> None:
        self._step()
        with self._lock:
            self._settle()

    def unsynced(self) -> int:
        """How many bytes and names a power cut now would lose."""
        lost = 0
        current = self._current()
        for name, ino in current.items():
            data = (self.directory / name).read_bytes()
            if self._names.get(name) != ino:
                lost += 1 + len(data)
            elif data != self._data.get(ino, b""):
                lost += max(len(data), len(self._data.get(ino, b"")))
        return lost + sum(1 for name in self._names if name not in current)

    def unsynced_removals(self) -> set[str]:
        """Names removed since the directory was last synced: a power cut now brings them back."""
        with self._lock:
            return set(self._names) - set(self._current())

    def power_cut(self) -> int:
        """Drop everything not durable; returns unsynced() before the cut (0: nothing to drop)."""
        lost = self.unsynced()
        for name in self._current():
            os.unlink(self.directory / name)
        self.write_durable(self.directory)
        self._settle()
        return lost

    def write_durable(self, target: Path) -> None:
        """Write the regular files a power cut now would leave into `target` (empty of them):
        their durable names and bytes, with their permissions; names of one inode stay hard
        links of one file. (Symlinks are not tracked: they stay as they are, but for one at a
        durable file's name, which must have come later: it goes.)"""
        with self._lock:
            names, data, modes = dict(self._names), dict(self._data), dict(self._modes)
        first: dict[int, Path] = {}
        for name, ino in names.items():
            if os.path.islink(target / name):  # made since the name was last durable: gone at a cut
                os.unlink(target / name)
            if ino in first:
                os.link(first[ino], target / name)
            else:
                first[ino] = target / name
                fd = os.open(first[ino], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.fchmod(fd, modes.get(ino, 0o600))
                    view = memoryview(data.get(ino, b""))
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)

    def _current(self) -> dict[str, int]:
        current = {}
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                try:
                    self._modes.setdefault(entry.inode(), stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                except FileNotFoundError:  # removed meanwhile
                    continue
                current[entry.name] = entry.inode()
        return current


def _writer_frames() -> set[str]:
    """The service's functions on the calling thread's stack (the writer and its parts)."""
    names = set()
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if f"{os.sep}batched_event_api{os.sep}" in frame.f_code.co_filename:
            names.add(frame.f_code.co_name)
        frame = frame.f_back
    return names
