"""A window's file through its life, as Flink's FileSink keeps a part file: in progress (the hidden
`.NAME.inprogress`, which no `*.csv*` glob matches, appended by commit rounds) -> pending (closed
and listed in the journal, waiting for its final name) -> finished (renamed to `NAME.csv`, never
replaced, never changed again).

Names follow the reference: the window's start in UTC (its first event; with `--align interval`
the multiple of the interval it begins at), `user-events-YYYYMMDD-HHMMSS`, with -1, -2, ... added
when a name is taken. With a bucket as output (`window_ids`) each window's name also carries an
id of its own, `user-events-YYYYMMDD-HHMMSS.<16 hex>.csv`, random, chosen when its part file is
created and durable with its name in the journal: the uploader tells the window's own earlier
upload from another window's with the same bytes by it (x-amz-meta-window-id).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import re
import secrets
from collections.abc import Iterator

from batched_event_api.commit.disk import LocalDisk
from batched_event_api.config import Compress
from batched_event_api.events.timestamps import utc_stamp

log = logging.getLogger("batched_event_api.writer")

PART_SUFFIX = ".inprogress"
# With a bucket: the windows already uploaded whose local file the journal still keeps, one name a
# line, rewritten by the uploader as that changes (for `status`; advisory, never synced).
UPLOADED_LIST = ".uploaded"
_FINISHED = re.compile(r"(user-events-\d{8}-\d{6})(?:-\d+)?(?:\.([0-9a-f]{16}))?(\.csv(?:\.gz|\.zst)?)")
# A CSV window's file name ends in its compression's suffix; a bucket's object says it in its
# Content-Encoding.
_CSV_SUFFIXES = {Compress.NONE: ".csv", Compress.GZIP: ".csv.gz", Compress.ZSTD: ".csv.zst"}
CONTENT_ENCODINGS = {".csv.gz": "gzip", ".csv.zst": "zstd"}


def csv_suffix(compress: Compress) -> str:
    """The suffix of a CSV window's file name."""
    if compress not in _CSV_SUFFIXES:
        raise ValueError(f"CSV files are not compressed with {compress}")
    return _CSV_SUFFIXES[compress]


def finished_stem(name: str) -> tuple[str, str] | None:
    """`user-events-YYYYMMDD-HHMMSS` and `.csv`, `.csv.gz` or `.csv.zst` of a finished window's
    file name, its -N and window id dropped; None for any other name."""
    match = _FINISHED.fullmatch(name)
    return (match[1], match[3]) if match else None


def window_id(name: str) -> str | None:
    """The id in a finished window's file name; None for a name without one (a local output
    directory's, or a state directory's from before ids)."""
    match = _FINISHED.fullmatch(name)
    return match.group(2) if match else None


def names_from(stem: str, suffix: str) -> Iterator[str]:
    """A window's name, then the -1, -2, ... names it takes when that one is taken (the rule for
    a directory and for a bucket alike)."""
    yield stem + suffix
    for n in itertools.count(1):
        yield f"{stem}-{n}{suffix}"


def is_part_name(entry: str) -> bool:
    """Is this the name of a window's in-progress file (as part_name gives it)?"""
    return (
        entry.startswith(".")
        and entry.endswith(PART_SUFFIX)
        and finished_stem(entry[1 : -len(PART_SUFFIX)] + ".csv") is not None
    )


def part_name(name: str) -> str:
    """`user-events-X.csv` -> `.user-events-X.inprogress` (`user-events-X.<id>.csv` ->
    `.user-events-X.<id>.inprogress`): invisible to `*.csv*` and to dot-skipping readers."""
    return "." + name.removesuffix(".gz").removesuffix(".zst").removesuffix(".csv") + PART_SUFFIX


class PartFiles:
    """The window files of one storage (`suffix`: csv_suffix's)."""

    def __init__(self, disk: LocalDisk, suffix: str, *, window_ids: bool = False) -> None:
        self.disk = disk
        self.suffix = suffix
        self.window_ids = window_ids  # a bucket as output: names carry the window's id

    def name_for(self, window_start: int, reserved: set[str]) -> str:
        """The name of a window starting at this instant: free on disk and not `reserved`."""
        return self._free_name(
            f"user-events-{utc_stamp(window_start)}", reserved, secrets.token_hex(8) if self.window_ids else None
        )

    def _free_name(self, stem: str, reserved: set[str], ident: str | None = None) -> str:
        suffix = f".{ident}{self.suffix}" if ident else self.suffix
        # Nor a name whose part file another window has: `X.csv` and `X.csv.gz` share theirs (a
        # window of another --compress, committed and not yet published).
        return next(
            name
            for name in names_from(stem, suffix)
            if name not in reserved and not self.disk.exists(name) and not self.disk.exists(part_name(name))
        )

    def create(self, name: str) -> int:
        """A new, empty in-progress file for the window `name` (a descriptor)."""
        return self.disk.create(part_name(name))

    def reopen(self, name: str, size: int) -> tuple[int, int]:
        """The in-progress file of `name`, cut to `size` (what a request wrote past its last
        record goes); returns the descriptor and the size it has, which is less than `size` only
        when fsync was off and the machine lost power."""
        return self.disk.reopen(part_name(name), size)

    def read_range(self, name: str, start: int, end: int, published_as: str | None = None) -> bytes | None:
        """Bytes [start, end) of the window's file, in progress or finished (under `published_as`
        where the journal says it was published elsewhere); None when neither exists. A symlink
        or the like at either name is not the window's file (never followed)."""
        for candidate in (part_name(name), published_as or name):
            with contextlib.suppress(FileNotFoundError, _NotRegular), _not_regular_as_missing():
                return self.disk.read_range(candidate, start, end)
        return None

    def open_all(self, names: list[tuple[str, str]]) -> list[int]:
        """Read-only descriptors of these windows' files (each: its name, the name it is finished
        under), wherever they are in their life (to sync them)."""
        fds = []
        for name, finished in names:
            for candidate in (part_name(name), finished):
                with contextlib.suppress(FileNotFoundError, _NotRegular):
                    with _not_regular_as_missing():
                        fds.append(self.disk.open_read(candidate)[0])
                    break
        return fds

    def publish(self, names: list[str], moved: dict[str, str]) -> tuple[list[str], list[str]]:
        """Pending -> finished: each window's file gets its final name (`moved` has the ones the
        journal says go elsewhere), never replacing a file. Returns the names renamed now, which
        stay listed in the journal until a round syncs the directory, and the names held by a
        file this server did not write (the caller records a free name for each, then publishes
        again); raises OSError when the storage refuses (retried later)."""
        renamed, blocked = [], []
        for name in names:
            part, final = part_name(name), moved.get(name, name)
            if self.disk.is_link_or_special(part):
                # Another program's, at the name of a window published already (the name stays
                # listed until the directory is synced): ours is a regular file. Removed, never
                # followed nor published as the window.
                log.warning("%s is not a file this server made: removing it", part)
                self.disk.remove(part)
            try:
                self.disk.publish(part, final)
            except FileNotFoundError:
                continue  # finished already, in an earlier round
            except FileExistsError:
                if not self.disk.same_file(part, final):
                    blocked.append(name)
                    continue
                self.disk.remove(part)  # linked, not yet unlinked, before a crash
            renamed.append(name)
        return renamed, blocked

    def free_name(self, name: str, reserved: set[str]) -> str:
        """The next free -N name of a window whose name is held by another file."""
        stem, _ = finished_stem(name)  # type: ignore[misc]  # names come from name_for
        return self._free_name(stem, reserved, window_id(name))  # the window keeps its id

    def remove_strays(self, keep: list[str]) -> None:
        """Delete in-progress files of no window in `keep`: written by rounds never committed.
        Only names this writer gives part files: another program's `*.inprogress` stays."""
        wanted = {part_name(name) for name in keep}
        for entry in self.disk.names():
            if is_part_name(entry) and entry not in wanted:
                log.info("removing %s: written by a request that was never acknowledged", entry)
                self.disk.remove(entry)


class _NotRegular(Exception):
    """Something other than a regular file at a window's name."""


@contextlib.contextmanager
def _not_regular_as_missing() -> Iterator[None]:
    """A symlink (ELOOP: opened without following) or a FIFO or directory (EINVAL) at a window's
    name is not the window's file."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL):
            raise _NotRegular from exc
        raise
