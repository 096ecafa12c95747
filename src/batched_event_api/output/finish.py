"""A committed window's way out of the state directory: [convert to Parquet] -> store, under its
partition. (The release of its CSV afterwards is the uploader's: uploader.py.)

Every step is redone whole after a crash: the window's CSV stays in the state directory until
its file is in the store, so a crash or power cut during a conversion loses nothing. The
Parquet file is built in a hidden temporary file of the state directory (`.NAME.<random>.parquet.tmp`,
O_EXCL, O_NOFOLLOW, owner-only), never under a name a reader looks at, removed once published;
the ones a crash left are removed at the next start. Converted again, a window keeps its id, so
`publish` still knows its own earlier create, whatever bytes the conversion gave this time.

A window's own earlier create is only found under the name the same shape gives: the state
directory records its shape (`.finish-shape`, synced before any window goes out), and a start
with another --format, --partition or --header is refused while it holds windows, which may be in the
store already under the recorded one (a window there twice, at two paths, otherwise), or were
written with(out) a header row (a conversion would take them for damaged, for good).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from batched_event_api.commit.partfiles import CONTENT_ENCODINGS, finished_stem, window_id
from batched_event_api.config import Compress, Format
from batched_event_api.output.partition import Partition
from batched_event_api.output.store import Finished, Outcome, Store, publish

log = logging.getLogger("batched_event_api.upload")

PARQUET_SUFFIX = ".parquet"
PARQUET_TYPE = "application/vnd.apache.parquet"
_TEMPORARY = re.compile(r"\.user-events-[^/]*\.parquet\.tmp|\.finish-shape\.[0-9a-f]{16}\.tmp")
SHAPE_RECORD = ".finish-shape"
_OPEN_TEMPORARY = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Unconvertible(Exception):
    """A window's file is not CSV the writer renders, or its name holds no time (changed or put
    there by someone else): it stays in the state directory, said (the message says why), and
    holds up no other window."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What a committed window becomes in its store."""

    format: Format = Format.CSV
    compression: Compress = Compress.NONE  # of a Parquet file (a CSV window's is in its name already)
    header: bool = False  # the window's CSV starts with a header row
    partition: Partition | None = None
    max_row_bytes: int | None = None  # longer CSV rows are damage (parquet.max_row_bytes of --max-body)

    @property
    def partition_template(self) -> str | None:
        return self.partition.template if self.partition else None


class Finish:
    """Puts committed windows (files of the state directory) into a store, each once."""

    def __init__(self, directory: Path, store: Store, shape: Shape, *, read_whole_below: int) -> None:
        self.directory = directory
        self.store = store
        self.shape = shape
        self.read_whole_below = read_whole_below  # smaller files are read into memory once

    def claim(self) -> None:
        """Record this shape as the one the state directory's windows go out under: ValueError,
        saying what to do, when it holds windows and recorded another (or unreadable)."""
        ours: dict[str, object] = {
            "format": self.shape.format.value,
            "partition": self.shape.partition_template,
            "header": self.shape.header,
        }
        windows = sum(1 for name in os.listdir(self.directory) if finished_stem(name) is not None)
        if windows:
            recorded = _recorded_shape(self.directory / SHAPE_RECORD)
            if recorded is not None and recorded != ours:
                raise ValueError(
                    f"the state directory {self.directory} holds {windows} committed windows that may be in "
                    f"{self.store.url} already, as {_options(recorded)}, and could be put in again elsewhere as "
                    f"{_options(ours)}: serve it with those until they are out (a clean stop drains them), "
                    "then restart with the new ones"
                )
            if recorded == ours:
                return
        _write_synced(self.directory, SHAPE_RECORD, json.dumps(ours).encode())

    def release_claim(self) -> None:
        """No window left in the state directory: any shape may come next."""
        if not any(finished_stem(name) is not None for name in os.listdir(self.directory)):
            # The windows' removals (not synced) durable first: a power cut must not keep this
            # one and undo theirs, leaving windows the store has without their shape.
            _sync_directory(self.directory)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / SHAPE_RECORD)

    def remove_temporaries(self) -> None:
        """Conversions (and shape records) a crash cut short (their windows are converted again)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if _TEMPORARY.fullmatch(entry.name):
                    log.info("removing %s: a conversion cut short (the window is converted again)", entry.name)
                    try:
                        os.unlink(entry.path)  # never followed: unlink removes a link itself
                    except FileNotFoundError:
                        pass
                    except IsADirectoryError:  # not ours: left, and the rest still removed
                        log.warning("%s in %s is a directory, not a conversion: left alone", entry.name, self.directory)

    def put(self, name: str, f: BinaryIO, size: int) -> tuple[str, Outcome]:
        """Put the window of the state directory's file `name` (open as `f`, `size` bytes) in
        the store: its name there (under its partition) and how it got there."""
        stem, suffix = finished_stem(name)  # type: ignore[misc]  # only finished names come here
        where = stem
        if self.shape.partition is not None:
            try:
                where = self.shape.partition.prefix(stem) + stem
            except ValueError:  # a stamp no date has: not the writer's
                raise Unconvertible("names no window's time, so no partition") from None
        ident = window_id(name)
        if self.shape.format is Format.CSV:
            encoding = CONTENT_ENCODINGS.get(suffix)
            return publish(self.store, where, suffix, self._finished(f, size, ident, "text/csv", encoding))
        with self._converted(name, f) as (parquet, parquet_size):
            return publish(
                self.store, where, PARQUET_SUFFIX, self._finished(parquet, parquet_size, ident, PARQUET_TYPE)
            )

    @contextlib.contextmanager
    def _converted(self, name: str, f: BinaryIO) -> Iterator[tuple[BinaryIO, int]]:
        """The window converted into Parquet, in a temporary file open at its start."""
        from batched_event_api.output.parquet import convert  # pyarrow, only when there is Parquet

        temporary = self.directory / f".{name}.{secrets.token_hex(8)}{PARQUET_SUFFIX}.tmp"
        fd = os.open(temporary, _OPEN_TEMPORARY, 0o600)
        try:
            with os.fdopen(fd, "w+b") as out:
                try:
                    convert(
                        f,
                        out,
                        header=self.shape.header,
                        compression=self.shape.compression.value,
                        max_row_bytes=self.shape.max_row_bytes,
                    )
                except ValueError as exc:  # the conversion's errors about the bytes it was given
                    raise Unconvertible(f"cannot be converted into Parquet ({exc})") from None
                out.flush()
                size = out.tell()
                out.seek(0)
                yield out, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def _finished(
        self, f: BinaryIO, size: int, ident: str | None, content_type: str, encoding: str | None = None
    ) -> Finished:
        data = f.read() if size < self.read_whole_below else None
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(f)
        f.seek(0)  # the store reads it from its start (a bucket streams parts from it, data or not)
        return Finished(f, size, digest, ident, data, content_type=content_type, content_encoding=encoding)


def sha256_of(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _recorded_shape(path: Path) -> dict[str, object] | None:
    """The shape a state directory records; None when it records none (from before records)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path} (the shape its windows go out under): {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            recorded = json.loads(f.read(4096))
        except ValueError:
            raise ValueError(f"{path} (the shape its windows go out under) is damaged: remove it") from None
    return recorded if isinstance(recorded, dict) else {}


def _options(shape: dict[str, object]) -> str:
    partition = shape.get("partition")
    return (
        f"--format {shape.get('format')} "
        + (f"--partition {partition!r}" if partition else "without --partition")
        + (" --header" if shape.get("header") else " without --header")
    )


def _write_synced(directory: Path, name: str, data: bytes) -> None:
    """`name` in `directory` holds `data`, durably (a temporary file renamed over it)."""
    temporary = directory / f"{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, _OPEN_TEMPORARY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, directory / name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
