"""The journal: one checksummed record per commit round (the commit point), snapshots that replace
it, and reading it back, where only a torn last record is tolerated.

Each line is `CRC32-hex JSON\n`. A round appends its record and syncs it together with the rows;
a snapshot (the whole state in one record) replaces the file by rename. Recovery (in the writer)
decides what the records mean; this module only keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec

from batched_event_api.commit.disk import LocalDisk

JOURNAL = ".journal"
_TMP = JOURNAL + ".tmp"
log = logging.getLogger("batched_event_api.writer")
COMPACT_BYTES = 4 << 20  # journal size from which it is compacted (and never below twice a snapshot)
_ADVICE = "restore it from a backup, or move it away to start afresh (in-progress windows would be discarded)"


class OpenFile(msgspec.Struct, omit_defaults=True):
    """A window being written: its final name, start (UTC ns), durable size and rows, and whether it
    re-opens a window committed already (strict windows: a late file, which the watermark does not
    close)."""

    name: str
    start: int
    size: int
    rows: int
    late: bool = False


class Check(msgspec.Struct, array_like=True):
    """Bytes [start, end) of a window's file as a request wrote them, by their CRC-32."""

    name: str
    start: int
    end: int
    crc: int


class Record(msgspec.Struct, omit_defaults=True):
    """One journal entry: the state after a step, and what that step did."""

    seq: int
    open: OpenFile | None = None  # the one open window, as every version writes it (see window_fields)
    windows: list[OpenFile] = []  # the open windows, in the order they were opened, when that is not one
    # Strict windows: the greatest event time accepted (UTC ns), which commits the windows it passes.
    watermark: int | None = None
    # Strict windows: the interval (ns) that bounds the open windows. A start under another interval
    # (or another --align) cannot take that interval's events: its windows are committed first.
    interval: int | None = None
    publish: list[str] = []  # committed windows whose final names may not be durable yet
    # Windows of `publish` whose final name another program took: the name each is published under
    # instead. Recorded before that rename, so recovery always knows which file is the window's.
    moved: dict[str, str] = {}
    applied: list[tuple[str, int]] = []  # the Idempotency-Keys of the round's requests, with their events
    at: float = 0.0  # when the round was applied (Unix time): its keys are kept for --key-retention from then
    events: int = 0  # events the round wrote
    kept: list[tuple[str, int, float]] | None = None  # a snapshot: every remembered key, its events and time
    # The round's rows, synced together with this record: recovery keeps the record only when
    # they are all there.
    checks: list[Check] = []
    keys: list[tuple[str, int]] | None = None  # snapshots of 0.3 and before: every key, no time (read only)
    key: str | None = None  # journals of 0.2.0 and before: one request's key per record (read only)

    def opened(self) -> list[OpenFile]:
        """The open windows this record leaves, from either version of the record."""
        return self.windows or ([self.open] if self.open is not None else [])


def window_fields(windows: list[OpenFile], watermark: int | None, interval: int | None = None) -> dict[str, Any]:
    """The open windows as a record carries them: one window, not late, and no watermark (the
    first-event policy) as `open`, which versions before several open windows read too (a
    downgrade keeps the window, and the journal stays as they wrote it); else `windows`, with
    the strict windows' watermark and interval."""
    if watermark is None and interval is None and len(windows) == 1 and not windows[0].late:
        return {"open": windows[0]}
    return {"windows": windows, "watermark": watermark, "interval": interval}


_ENCODER = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    payload = _ENCODER.encode(record)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


class JournalDamaged(RuntimeError):
    """A journal record other than the last is unreadable: not a crash (which can only tear the
    tail), so no automatic repair; a person decides."""


def decode_journal(data: bytes) -> tuple[list[Record], list[int], bool]:
    """The intact records of a journal, each with the offset where it ends, and whether the last
    line was complete (newline-terminated) yet failed its check. A torn tail (the one record a
    crash can leave half-written) is dropped; a bad record with intact ones after it raises
    JournalDamaged."""
    records: list[Record] = []
    ends: list[int] = []
    good = 0
    complete_but_bad = False
    while good < len(data):
        end = data.find(b"\n", good)
        record = _decode_line(data[good:end]) if end >= 0 else None
        if record is None:
            if any(_decode_line(line) is not None for line in data[good:].split(b"\n")[1:]):
                raise JournalDamaged(f"record {len(records) + 1} (byte {good}) is damaged and intact records follow it")
            complete_but_bad = end >= 0
            break
        records.append(record)
        good = end + 1
        ends.append(good)
    return records, ends, complete_but_bad


def _decode_line(line: bytes) -> Record | None:
    crc, _, payload = line.partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
            return None
        return _RECORD.decode(payload)
    except (ValueError, msgspec.DecodeError):
        return None


class Journal:
    """The journal file of one directory: read at recovery, appended by each commit round, replaced
    by a snapshot when it grows. Not thread-safe (the writer's thread only)."""

    def __init__(self, directory: Path, disk: LocalDisk, *, fsync: bool, compact_bytes: int = COMPACT_BYTES) -> None:
        self.path = directory / JOURNAL
        self.disk = disk
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self.fd: int | None = None
        self.size = 0  # bytes of intact records: where the next one goes
        self.records = 0
        self._snapshot_size = 0
        self.void_from: int | None = None  # bytes from here on are a failed round's: never read them
        # Replaced by a snapshot whose name may not be durable (the directory's sync failed after
        # the rename): a power cut could bring the old journal back, without what is appended to
        # this one. The writer syncs the directory with its next record (or recovery does).
        self.name_unsynced = False

    def read(self) -> tuple[list[Record], list[int]]:
        """The intact records and where each ends. Damage (a bad record before intact ones, or an
        unreadable first record, which is always written whole) raises JournalDamaged. A last
        record that is whole but fails its check is dropped as a torn one would be, but loudly,
        and the journal as it was is kept aside: a flipped bit may have cost an acknowledged request."""
        data = self.disk.read_all(JOURNAL) or b""
        if self.void_from is not None:  # a failed round's record whose removal may not be durable
            data = data[: self.void_from]
        try:
            records, ends, complete_but_bad = decode_journal(data)
        except JournalDamaged as exc:
            raise JournalDamaged(f"{self.path} is damaged: {exc}; {_ADVICE}") from None
        if data and not records:
            # Starting afresh would delete the open window's rows: leave the decision to a person.
            raise JournalDamaged(f"{self.path} is unreadable; {_ADVICE}")
        if complete_but_bad:
            aside = self._keep_aside(data)
            log.error(
                "the journal's last record (byte %d on) is complete but fails its checksum: it is dropped, "
                "and the request it recorded is lost if it was acknowledged; the journal as it was is kept "
                "as %s",
                ends[-1],
                aside,
            )
        return records, ends

    def _keep_aside(self, data: bytes) -> str:
        """A copy of a damaged journal for a person to look at (best effort: the disk may be full)."""
        name = f"{JOURNAL}.damaged-{int(time.time())}"
        try:
            fd = self.disk.create(name)
            try:
                self.disk.write(fd, [data], 0)
                if self.fsync:
                    self.disk.sync_data(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"(nothing: {exc.strerror})"
        return str(self.path.with_name(name))

    def resume(self, records: int, end: int, snapshot_size: int) -> None:
        """Append after the first `records` records, ending at byte `end`: a torn tail is cut off in
        place (needs no free space, so it works on a full disk too). The journal is then durable
        as recovery reads it, whether or not it was cut now: its last record may sit in the page
        cache only (the process died before the round's sync: recovery then answers resends as
        replays, and publishes), and a failed round's record may have been cut off by a truncation
        that could not be synced (it must not come back at a power cut)."""
        self.close()
        self.fd = self.disk.open_append(JOURNAL)
        if os.fstat(self.fd).st_size != end:
            os.ftruncate(self.fd, end)
        if self.fsync:
            self.disk.sync_data(self.fd)
        self.size, self.records, self._snapshot_size = end, records, snapshot_size
        self.void_from = None

    def appended(self, line: bytes) -> None:
        """The round that wrote `line` at `size` is durable: the record is part of the journal."""
        self.size += len(line)
        self.records += 1

    def discard_unfinished(self) -> None:
        """A round failed and its requests are refused: its record must never count, also after a
        power cut. Cut it off durably; where that fails, this process reads the journal only up
        to here until a recovery has cut it (the writer recovers before its next step)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, self.size)
            if self.fsync:
                self.disk.sync_data(self.fd)
        except OSError:
            self.void_from = self.size

    def replace(self, snapshot: Record) -> None:
        """Replace the journal by one record of the whole state, atomically (write, sync, rename,
        sync the directory)."""
        line = encode_record(snapshot)
        fd = self.disk.create(_TMP)  # a stray or a symlink there is removed, never written through
        try:
            self.disk.write(fd, [line], 0)
            if self.fsync:
                self.disk.sync_data(fd)
            self.disk.replace(_TMP, JOURNAL)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):  # a full disk must not leave an empty one behind
                self.disk.remove(_TMP)
            raise
        # From the rename on, this descriptor is the journal: switch before anything else can fail.
        old, self.fd = self.fd, fd
        self.size = self._snapshot_size = len(line)
        self.records = 1
        self.void_from = None
        if old is not None:
            os.close(old)
        if self.fsync:
            self.name_unsynced = True
            self.disk.sync_directory()
            self.name_unsynced = False

    def due(self, keys: int, *, records: int = 0, size: int = 0) -> bool:
        """Time for a snapshot: many records (each start replays them) or many bytes (a round
        spanning many windows writes kilobytes; each start reads the journal whole). Never sooner
        than twice the snapshot itself, which holds every key. `records` and `size`: as if that
        much more were appended (will the next round's end be one?)."""
        return self.records + records > max(1000, 2 * keys) or self.size + size > max(
            self.compact_bytes, 2 * self._snapshot_size
        )

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
