"""Storage: the only code that touches the window files of a directory.

`LocalDisk` is a directory on a local filesystem. Its operations are the ones the part files
need, by name: create, reopen, write at an offset, read a range, list, remove, make durable
(file data, the directory's names, or the whole filesystem), and publish (give a file its final
name, never replacing one). A test double (tests/powercut.py) stands in for it to model a power
cut: whatever was written but not made durable by one of its syncs is lost.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from batched_event_api.events.native import load

# write_and_sync's C twin: the same steps with the GIL released once (each Python syscall releases
# and retakes it, and retaking waits for the event loop's turn: most of a busy server's round).
_durable = load("batched_event_api.commit._durable")

_IOV_MAX = 1024  # buffers per pwritev (Linux's IOV_MAX)
FILE_MODE = 0o600  # windows hold emails and phones, the journal the clients' keys
GROUP_FILE_MODE = 0o640  # --group-readable
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
LOCK = ".lock"  # held (flock) by the one server of a directory; `status` tests it


def take_lock(directory: Path, mode: int) -> int:
    """Take the directory for this process (one server per directory): the lock's descriptor,
    held until closed; RuntimeError when another process holds it."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | _NOFOLLOW, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{directory} is in use by another batched-event-api") from None
    return fd


class LocalDisk:
    """A directory, with POSIX durability as the commit protocol relies on it: file data is
    durable after fdatasync, a name (creation, rename, unlink) after an fsync of its directory."""

    def __init__(self, directory: Path, *, mode: int = FILE_MODE) -> None:
        self.directory = directory
        # Names are joined as strings: a Path per call cost as much as the lstat it named (yappi, W1).
        self._prefix = os.path.join(os.fspath(directory), "")
        self.mode = mode  # of every file created (before the umask): the owner's alone by default
        self._dir_fd: int | None = None  # the directory itself, for syncing its names

    def open(self) -> None:
        """Start using the directory (it exists)."""
        if self._dir_fd is None:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    # -- names --------------------------------------------------------------------------------

    def create(self, name: str) -> int:
        """A new, empty file of its own; its descriptor, open for writing. Whatever had the name
        (a stray, or a symlink someone put there) is removed first, never written through."""
        path = self._prefix + name
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, self.mode)
        except FileExistsError:
            os.unlink(path)  # the name itself, not what a link points to
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, self.mode)

    def reopen(self, name: str, size: int) -> tuple[int, int]:
        """The file (created if missing) cut to at most `size`; its descriptor and the size it has."""
        fd, info = self._open_regular(name, os.O_RDWR | os.O_CREAT)
        try:
            if info.st_size > size:
                os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            raise
        return fd, min(info.st_size, size)

    def open_read(self, name: str) -> tuple[int, os.stat_result]:
        """A read-only descriptor of a regular file, and its stat (FileNotFoundError when there is none)."""
        return self._open_regular(name, os.O_RDONLY)

    def open_append(self, name: str) -> int:
        """A write descriptor of an existing regular file."""
        return self._open_regular(name, os.O_WRONLY)[0]

    def _open_regular(self, name: str, flags: int) -> tuple[int, os.stat_result]:
        """Open the regular file at `name`, never through a symlink (ELOOP) nor anything else
        someone put there, a FIFO or a device (EINVAL); O_NONBLOCK so that a FIFO cannot hang the
        open (no effect on files)."""
        fd = os.open(self._prefix + name, flags | _NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, self.mode)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self._prefix + name)
        except OSError:
            os.close(fd)
            raise
        return fd, info

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file, fewer where it is shorter (FileNotFoundError when missing)."""
        fd, _ = self.open_read(name)
        try:
            return os.pread(fd, end - start, start)
        finally:
            os.close(fd)

    def read_all(self, name: str) -> bytes | None:
        """The whole file; None when there is none."""
        try:
            fd, _ = self.open_read(name)
        except FileNotFoundError:
            return None
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self._prefix + name)

    def names(self) -> list[str]:
        return os.listdir(self.directory)

    def remove(self, name: str) -> None:
        os.unlink(self._prefix + name)

    def replace(self, src_name: str, dst_name: str) -> None:
        """Rename src over dst (the journal's snapshot: the one name that is meant to be replaced)."""
        os.replace(self._prefix + src_name, self._prefix + dst_name)

    def regular_file(self, name: str) -> os.stat_result | None:
        """The status of the regular file at the name; None when there is none, or something
        else is there (a symlink is never followed)."""
        try:
            info = os.lstat(self._prefix + name)
        except FileNotFoundError:
            return None
        return info if stat.S_ISREG(info.st_mode) else None

    def is_link_or_special(self, name: str) -> bool:
        """Is there something other than a regular file at the name (a symlink, a FIFO, a
        directory)? Never one of ours: this server only makes regular files."""
        try:
            return not stat.S_ISREG(os.lstat(self._prefix + name).st_mode)
        except FileNotFoundError:
            return False

    def same_file(self, a: str, b: str) -> bool:
        """Are the two names one file (a hard link left by a publish a crash cut short)?"""
        sa, sb = os.lstat(self._prefix + a), os.lstat(self._prefix + b)
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    # -- bytes and durability -----------------------------------------------------------------

    @property
    def has_syncfs(self) -> bool:
        return _SYNCFS is not None

    def write(self, fd: int, chunks: Sequence[bytes | memoryview], offset: int) -> None:
        """pwritev until every byte of the chunks is written (a write may stop short)."""
        views = [memoryview(c) for c in chunks if len(c)]
        while views:
            n = os.pwritev(fd, views[:_IOV_MAX], offset)
            offset += n
            while views and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]

    def write_and_sync(
        self, writes: Sequence[tuple[int, int, Sequence[bytes | memoryview]]], fds: Sequence[int], directory: bool
    ) -> None:
        """Each (fd, offset, chunks) written, then the files' data made durable and the
        directory's names too. A failed write stops it (nothing synced); every sync is tried and
        the first failed one raised. In C where it was compiled (the GIL released once, the syncs
        side by side on threads of its own: the filesystem folds them into one journal commit),
        unless a subclass or a test replaced one of the steps: they stay the definition of what
        this does."""
        if _durable is not None and self._steps_are_own():
            assert not directory or self._dir_fd is not None, "open() first"
            _durable.write_and_sync(writes, fds, self._dir_fd if directory else -1)
            return
        for fd, offset, chunks in writes:
            self.write(fd, chunks, offset)
        syncs = [partial(self.sync_data, fd) for fd in fds] + ([self.sync_directory] if directory else [])
        errors = []
        for sync in syncs:
            try:
                sync()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _steps_are_own(self) -> bool:
        cls = type(self)
        return (cls.write, cls.sync_data, cls.sync_directory) == _OWN_STEPS and not {
            "write",
            "sync_data",
            "sync_directory",
        } & vars(self).keys()

    def sync_data(self, fd: int) -> None:
        """A file's bytes, durable (not its name)."""
        os.fdatasync(fd)

    def sync_directory(self) -> None:
        """The directory's names (creations, renames, removals), durable."""
        assert self._dir_fd is not None, "open() first"
        os.fsync(self._dir_fd)

    def sync_filesystem(self) -> None:
        """Everything written to the filesystem holding the directory, durable: data, names, its journal."""
        assert _SYNCFS is not None and self._dir_fd is not None, "only where has_syncfs"
        _checked(_SYNCFS(self._dir_fd))

    def publish(self, src_name: str, dst_name: str) -> None:
        """Give src's file the name dst instead, never replacing a file there (FileExistsError).
        renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; else hard link, then
        unlink (never a moment without either name); else a plain rename."""
        src, dst = self._prefix + src_name, self._prefix + dst_name
        if _rename_noreplace(src, dst):
            return
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.rename(src, dst)  # no hard links here; the caller chose dst free
            return
        os.unlink(src)


# The steps write_and_sync's C twin stands for, as defined here (not as a subclass or a test replaced them).
_OWN_STEPS = (LocalDisk.write, LocalDisk.sync_data, LocalDisk.sync_directory)


def describe(exc: OSError) -> str:
    """What went wrong, for a client: the cause without the server's paths."""
    return "storage unavailable: " + {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the filesystem is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOENT: "the output directory is missing",
        errno.EIO: "an I/O error occurred",
    }.get(exc.errno or 0, exc.strerror or str(exc))


# -- libc calls Python's os module does not have ------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return os.uname().sysname == "Linux" and release >= (major, minor)


# syncfs() reports writeback errors only from Linux 5.8 on: before that it is not used.
_SYNCFS = getattr(_libc, "syncfs", None) if _kernel_at_least(5, 8) else None


def _checked(result: int, src: str | None = None, dst: str | None = None) -> None:
    """A libc call's -1 as the OSError Python would raise (FileExistsError for EEXIST, ...)."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src, None, dst)


def _rename_noreplace(src: str, dst: str) -> bool:
    """Linux renameat2(RENAME_NOREPLACE): one metadata operation instead of link + unlink. False
    where the kernel or filesystem lacks it."""
    if _renameat2 is None:
        return False
    try:
        _checked(_renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE), src, dst)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True
