"""A directory as a Store: a finished window is a file, created under its name only if the name
is free, durably.

A create writes the window into a hidden temporary file of the directory (`.NAME.<random>.tmp`,
made with O_EXCL and O_NOFOLLOW, owner-only unless told otherwise), records the window's SHA-256
and id with it, syncs it, links it to the name (link(2) never replaces an entry, nor follows a
symlink there: EEXIST says the name is taken), unlinks the temporary name and syncs the
directory. A crash leaves either no file under the name or the whole window, recorded.

The record is two user extended attributes; where the filesystem has none (ENOTSUP) it is a
hidden file beside the window keyed by the window file's inode (`.NAME.<inode>.identity`, synced
before the link), so `identity` still says the SHA-256 and the id. A file under a name that this
store did not record (another program's, a symlink, a directory) has neither: it is never taken
for a window's own create.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
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


class LocalDirectory:
    """A directory (it exists) as a Store. Methods may be called from several threads at once."""

    def __init__(self, directory: Path, *, mode: int = FILE_MODE) -> None:
        self.directory = Path(directory)
        self.mode = mode  # of every file created (before the umask)
        self.url = self.directory.absolute().as_uri() + "/"

    def create(self, name: str, window: Finished) -> bool:
        _check(name)
        try:
            with self._opened() as directory:
                return self._create(directory, name, window)
        except OSError as exc:
            raise StoreError(f"create {name} in {self.directory}: {exc.strerror or exc}") from None

    def identity(self, name: str) -> Identity | None:
        _check(name)
        try:
            with self._opened() as directory:
                return self._identity(directory, name)
        except OSError as exc:
            raise StoreError(f"identity of {name} in {self.directory}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _opened(self) -> Iterator[int]:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def _create(self, directory: int, name: str, window: Finished) -> bool:
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, _OPEN_NEW, self.mode, dir_fd=directory)
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


def _check(name: str) -> None:
    """A window's name: one plain, visible entry of the directory."""
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise ValueError(f"not a name a window can have: {name!r}")


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
