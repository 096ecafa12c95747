"""A committed window's way out of the state directory: [convert to Parquet] -> store, under its
partition. (The release of its CSV afterwards is the uploader's: uploader.py.)

Every step is redone whole after a crash: the window's CSV stays in the state directory until
its file is in the store, so a crash or power cut during a conversion loses nothing. The
Parquet file is built in a hidden temporary file of the state directory (`.NAME.<random>.parquet.tmp`,
O_EXCL, O_NOFOLLOW, owner-only), never under a name a reader looks at, removed once published;
the ones a crash left are removed at the next start. Converted again, a window keeps its id, so
`publish` still knows its own earlier create, whatever bytes the conversion gave this time.
"""

from __future__ import annotations

import contextlib
import hashlib
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
_TEMPORARY = re.compile(r"\.user-events-[^/]*\.parquet\.tmp")
_OPEN_TEMPORARY = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Unconvertible(Exception):
    """A window's file is not CSV the writer renders (changed by someone else): it stays in the
    state directory, said, and holds up no other window."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What a committed window becomes in its store."""

    format: Format = Format.CSV
    compression: Compress = Compress.NONE  # of a Parquet file (a CSV window's is in its name already)
    header: bool = False  # the window's CSV starts with a header row
    partition: Partition | None = None


class Finish:
    """Puts committed windows (files of the state directory) into a store, each once."""

    def __init__(self, directory: Path, store: Store, shape: Shape, *, read_whole_below: int) -> None:
        self.directory = directory
        self.store = store
        self.shape = shape
        self.read_whole_below = read_whole_below  # smaller files are read into memory once

    def remove_temporaries(self) -> None:
        """Conversions a crash cut short (their windows are converted again)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if _TEMPORARY.fullmatch(entry.name):
                    log.info("removing %s: a conversion cut short (the window is converted again)", entry.name)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)  # never followed: unlink removes a link itself

    def put(self, name: str, f: BinaryIO, size: int) -> tuple[str, Outcome]:
        """Put the window of the state directory's file `name` (open as `f`, `size` bytes) in
        the store: its name there (under its partition) and how it got there."""
        stem, suffix = finished_stem(name)  # type: ignore[misc]  # only finished names come here
        where = self.shape.partition.prefix(stem) + stem if self.shape.partition else stem
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
                    convert(f, out, header=self.shape.header, compression=self.shape.compression.value)
                except ValueError as exc:  # the conversion's errors about the bytes it was given
                    raise Unconvertible(str(exc)) from None
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
