"""What an output directory holds, read from its journal and files: no server needed, nothing written."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from batched_event_api.commit.disk import LOCK, LocalDisk
from batched_event_api.commit.journal import JOURNAL, OpenFile, decode_journal
from batched_event_api.commit.partfiles import UPLOADED_LIST, finished_stem, part_name
from batched_event_api.events.timestamps import utc_stamp


@dataclass(frozen=True, slots=True)
class OpenWindow:
    name: str  # the name it is committed under
    start: str  # event time, UTC
    rows: int
    bytes: int
    idle_seconds: float  # wall clock since its last write
    late: bool = False  # re-opens a window committed already (--align interval)


@dataclass(frozen=True, slots=True)
class Status:
    directory: str
    served: bool  # a server holds the directory now
    open: OpenWindow | None  # the window opened last (the one open window of --align first-event)
    committed_files: int
    committed_bytes: int
    newest_committed: str | None
    pending_publish: list[str] = field(default_factory=list)  # committed, still under the part file's name
    journal_bytes: int = 0
    journal_records: int = 0
    uploaded_kept: int = 0  # with a bucket: uploaded, the local file kept while the journal names it
    open_windows: list[OpenWindow] = field(default_factory=list)  # every open window, oldest start first

    def as_dict(self) -> dict:
        return asdict(self)


def read_status(directory: Path, *, now: float | None = None) -> Status:
    """Raises FileNotFoundError for a missing directory, JournalDamaged for a damaged journal,
    OSError for a journal that is not a regular file (never followed if a link, nor waited on)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    disk = LocalDisk(directory)
    try:
        data = disk.read_all(JOURNAL) or b""
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EINVAL):
            raise
        raise OSError(exc.errno, "not a regular file", str(directory / JOURNAL)) from None
    records, _, _ = decode_journal(data)
    last = records[-1] if records else None
    now = now if now is not None else time.time()
    opened = [_open_window(disk, window, now) for window in (last.opened() if last else [])]
    uploaded = _uploaded_names(disk)
    found = finished_files(directory)
    committed = sorted((name, info.st_size) for name, info in found.items() if name not in uploaded)
    return Status(
        directory=str(directory),
        served=_is_served(directory),
        open=opened[-1] if opened else None,
        committed_files=len(committed),
        committed_bytes=sum(size for _, size in committed),
        newest_committed=committed[-1][0] if committed else None,
        pending_publish=[n for n in (last.publish if last else []) if disk.regular_file(part_name(n))],
        journal_bytes=len(data),
        journal_records=len(records),
        uploaded_kept=len(found) - len(committed),
        open_windows=sorted(opened, key=lambda w: w.start),
    )


def _open_window(disk: LocalDisk, window: OpenFile, now: float) -> OpenWindow:
    part = disk.regular_file(part_name(window.name))
    age = now - part.st_mtime if part is not None else 0.0
    stamp = utc_stamp(window.start)
    start = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"
    return OpenWindow(window.name, start, window.rows, window.size, round(max(age, 0.0), 1), window.late)


def _uploaded_names(disk: LocalDisk) -> frozenset[str]:
    """The windows the uploader lists as in the bucket already (none without a bucket, nor when
    something other than the uploader's file is at the name)."""
    try:
        return frozenset((disk.read_all(UPLOADED_LIST) or b"").decode().split())
    except (OSError, UnicodeDecodeError):
        return frozenset()


def finished_files(directory: Path) -> dict[str, os.stat_result]:
    """Each finished window's file (named as the writer publishes it: `finished_stem`) with its
    own stat: regular files only, never through a link (what else sits at such a name is neither
    the server's nor uploaded)."""
    found = {}
    for entry in os.scandir(directory):
        if finished_stem(entry.name) is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # uploaded and removed meanwhile
            continue
        if stat.S_ISREG(info.st_mode):
            found[entry.name] = info
    return found


def _is_served(directory: Path) -> bool:
    """Whether a server holds the directory's lock (tried without waiting, released at once)."""
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO cannot hang it
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        return False  # a link: no server takes it (nor follows it)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
