"""A directory as a Store: a finished window is a file, created under its name only if the name
is free, durably.

A create writes the window into a hidden temporary file of the directory (`.NAME.<random>.tmp`,
made with O_EXCL and O_NOFOLLOW, owner-only unless told otherwise), records the window's SHA-256
and id with it, syncs it, links it to the name (link(2) never replaces an entry, nor follows a
symlink there: EEXIST says the name is taken), unlinks the temporary name and syncs the
directory. A crash leaves either no file under the name or the whole window, recorded. A create holds a
lock (flock) on its temporary file; the first create in a directory, in each process, removes
the temporary files of ours no live create holds (a SIGKILL's leftovers, as big as a window).

The record is two user extended attributes; where the filesystem has none (ENOTSUP) it is a
hidden file beside the window keyed by the window file's inode (`.NAME.<inode>.identity`, synced
before the link), so `identity` still says the SHA-256 and the id. A file under a name that this
store did not record (another program's, a symlink, a directory) has neither: it is never taken
for a window's own create.

A name may have a prefix of sub-directories (`dt=2024-07-01/hour=02/NAME`, from --partition).
They are walked one by one with O_DIRECTORY and O_NOFOLLOW (a symlink or a file where a
directory should be is never followed: the create fails, said, until someone removes it) and
made where missing, owner-only (and group-readable with the files), each new one synced and
its parent too before the window's file is linked in it: a window released after its create
is never lost to a power cut that takes its directory's entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from batched_event_api.commit.disk import FILE_MODE
from batched_event_api.output.store import Finished, Identity, StoreError

SHA256_ATTRIBUTE = "user.bea.sha256"
WINDOW_ID_ATTRIBUTE = "user.bea.window-id"
_NO_ATTRIBUTES = (errno.ENOTSUP, errno.EOPNOTSUPP)
_COPY_SIZE = 1 << 20
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_EXISTING = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO cannot hang it
_TEMPORARY = re.compile(r"\.(user-events-[^/]*)\.[0-9a-f]{16}\.tmp")  # and the window's name
# A leftover is at least this old: a live create's file is younger between its open and its lock.
_LEFTOVER_AGE = 60.0  # seconds
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalDirectory:
    """A directory (it exists) as a Store. Methods may be called from several threads at once."""

    def __init__(self, directory: Path, *, mode: int = FILE_MODE) -> None:
        self.directory = Path(directory)
        self.mode = mode  # of every file created (before the umask)
        self.directory_mode = mode | (mode & 0o444) >> 2  # of every sub-directory made: x where r
        self.url = self.directory.absolute().as_uri() + "/"
        # Sub-directories whose entry in their parent is known durable (made and synced, or
        # synced once by this store): the rest are synced at their first create.
        self._durable: set[str] = set()
        self._swept: set[str] = set()  # directories ("" the output itself) swept of leftovers
        self._locking = threading.Lock()  # a sweep, or a create's open and lock of its file

    def create(self, name: str, window: Finished) -> bool:
        prefix, leaf = _check(name)
        try:
            with self._opened(prefix, make=True) as directory:
                assert directory is not None
                return self._create(directory, leaf, window)
        except OSError as exc:
            raise StoreError(f"create {name} in {self.directory}: {_reason(exc)}") from None

    def identity(self, name: str) -> Identity | None:
        prefix, leaf = _check(name)
        try:
            with self._opened(prefix, make=False) as directory:
                return None if directory is None else self._identity(directory, leaf)
        except OSError as exc:
            raise StoreError(f"identity of {name} in {self.directory}: {_reason(exc)}") from None

    @contextlib.contextmanager
    def _opened(self, prefix: list[str], *, make: bool) -> Iterator[int | None]:
        """The directory of a name's prefix, walked without following a link; with `make`,
        made where missing (else None when one is missing)."""
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if make and not prefix:
                self._sweep(fd, "")
            for depth, component in enumerate(prefix):
                parent, fd = fd, -1  # closed once, whatever _step does
                try:
                    fd = self._step(parent, component, "/".join(prefix[: depth + 1]), make=make)
                finally:
                    os.close(parent)
                if fd < 0:
                    yield None
                    return
            if make and prefix:
                self._sweep(fd, "/".join(prefix))
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def _step(self, parent: int, component: str, path: str, *, make: bool) -> int:
        """The sub-directory `component` of `parent` (made, with `make`, when missing); -1 when
        it is missing and not made."""
        try:
            fd = os.open(component, _OPEN_DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            if not make:
                return -1
            with contextlib.suppress(FileExistsError):  # made by another create meanwhile
                os.mkdir(component, self.directory_mode, dir_fd=parent)
            fd = os.open(component, _OPEN_DIRECTORY, dir_fd=parent)
            self._durable.discard(path)
        if make and path not in self._durable:
            os.fsync(fd)  # its own entries (none yet, when new)
            os.fsync(parent)  # its name in the parent, before anything is linked in it
            self._durable.add(path)
        return fd

    def _sweep(self, directory: int, path: str) -> None:
        """Remove the temporary files of killed creates from a directory, once per process:
        those of ours (by name, regular files) whose lock no live create holds."""
        if path in self._swept:
            return
        self._swept.add(path)
        with self._locking:
            self._sweep_locked(directory)

    def _sweep_locked(self, directory: int) -> None:
        for name in os.listdir(directory):
            if (ours := _TEMPORARY.fullmatch(name)) is None:
                continue
            try:
                fd = os.open(name, _OPEN_EXISTING, dir_fd=directory)
            except OSError:  # gone, a link, another user's: not ours to remove
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < _LEFTOVER_AGE:
                    continue  # not a file of ours; perhaps another server's create, not locked yet
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live create's
                # Its record first (no xattrs), while the inode that names it is not free for reuse.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_beside(ours[1], info), dir_fd=directory)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
            finally:
                os.close(fd)

    def _create(self, directory: int, name: str, window: Finished) -> bool:
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        with self._locking:  # no sweep of this process between the two
            fd = os.open(temporary, _OPEN_NEW, self.mode, dir_fd=directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: a sweep leaves it alone
            except BaseException:
                os.close(fd)
                os.unlink(temporary, dir_fd=directory)
                raise
        record: str | None = None
        try:
            try:
                _write(fd, window)
                record = _record(directory, fd, name, window, self.mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temporary, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
            except FileExistsError:
                return False  # taken, by anything (a symlink there is not followed)
            record = None  # the window's now
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=directory)
            if record is not None:  # a record of a file that did not get the name
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(record, dir_fd=directory)
            os.fsync(directory)  # the new name durable before True is returned

    def _identity(self, directory: int, name: str) -> Identity | None:
        try:
            fd = os.open(name, _OPEN_EXISTING, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EACCES):  # a symlink; a socket; another user's
                raise
            return Identity(os.lstat(name, dir_fd=directory).st_size, None, None)  # not this store's
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return Identity(info.st_size, None, None)  # a directory, a FIFO: not this store's
            try:
                sha256 = _attribute(fd, SHA256_ATTRIBUTE)
                window_id = _attribute(fd, WINDOW_ID_ATTRIBUTE) if sha256 is not None else None
            except UnicodeDecodeError:
                return Identity(info.st_size, None, None)  # not what this store writes: not its
            except OSError as exc:
                if exc.errno not in _NO_ATTRIBUTES:
                    raise
                sha256 = None
            if sha256 is None:  # not recorded in attributes: perhaps beside it
                return _recorded_beside(directory, name, info)
            return Identity(info.st_size, sha256, window_id)
        finally:
            os.close(fd)


def _check(name: str) -> tuple[list[str], str]:
    """A window's name, perhaps under sub-directories: plain, visible entries. Returns the
    sub-directories and the file's own name."""
    *prefix, leaf = name.split("/")
    if any(not part or part.startswith(".") or "\0" in part for part in (*prefix, leaf)):
        raise ValueError(f"not a name a window can have: {name!r}")
    return prefix, leaf


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a part of its directory is a symlink or a file, not a directory this store made (not followed)"
    return exc.strerror or str(exc)


def _attribute(fd: int, key: str) -> str | None:
    """An extended attribute's text; None when the file has none by that key."""
    try:
        return os.getxattr(fd, key).decode()
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        return None


def _write(fd: int, window: Finished) -> None:
    if window.data is not None:
        _write_all(fd, window.data)
        return
    while chunk := window.file.read(_COPY_SIZE):
        _write_all(fd, chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _record(directory: int, fd: int, name: str, window: Finished, mode: int) -> str | None:
    """Record the window's SHA-256 and id with its file: in its extended attributes, else in a
    file beside it (whose name is returned, to be removed if the window does not get `name`)."""
    try:
        os.setxattr(fd, SHA256_ATTRIBUTE, window.sha256.encode())
        if window.window_id is not None:
            os.setxattr(fd, WINDOW_ID_ATTRIBUTE, window.window_id.encode())
        return None
    except OSError as exc:
        if exc.errno not in _NO_ATTRIBUTES:
            raise
    beside = _beside(name, os.fstat(fd))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(beside, dir_fd=directory)  # a stale record of an inode number reused: never written through
    record = os.open(beside, _OPEN_NEW, mode, dir_fd=directory)
    try:
        _write_all(record, f"{window.sha256} {window.window_id or '-'}\n".encode())
        os.fsync(record)
    finally:
        os.close(record)
    os.fsync(directory)  # the record's name durable before the window's: never a window without it
    return beside


def _recorded_beside(directory: int, name: str, info: os.stat_result) -> Identity:
    """The identity a file beside the window's records (size only when there is none)."""
    unrecorded = Identity(info.st_size, None, None)  # not this store's
    try:
        fd = os.open(_beside(name, info), _OPEN_EXISTING, dir_fd=directory)
    except FileNotFoundError:
        return unrecorded
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        return unrecorded
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return unrecorded
        fields = os.read(fd, 200).decode("ascii", "replace").split()
    finally:
        os.close(fd)
    if len(fields) != 2:
        return unrecorded
    sha256, window_id = fields
    return Identity(info.st_size, sha256, None if window_id == "-" else window_id)


def _beside(name: str, info: os.stat_result) -> str:
    return f".{name}.{info.st_ino}.identity"
