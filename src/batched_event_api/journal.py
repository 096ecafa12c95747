"""The journal: one checksummed record per commit round (the commit point), snapshots that replace
it, and reading it back, where only a torn last record is tolerated.

Each line is `CRC32-hex JSON\n`. A round appends its record and syncs it together with the rows;
a snapshot (the whole state in one record) replaces the file by rename. Recovery (in the writer)
decides what the records mean; this module only keeps them.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import msgspec

from .storage import LocalDisk

JOURNAL = ".journal"
COMPACT_BYTES = 4 << 20  # journal size from which it is compacted (and never below twice a snapshot)
_ADVICE = "restore it from a backup, or move it away to start afresh (in-progress windows would be discarded)"


class OpenFile(msgspec.Struct):
    """The window being written: its final name, start (UTC ns), durable size and rows."""

    name: str
    start: int
    size: int
    rows: int


class Check(msgspec.Struct, array_like=True):
    """Bytes [start, end) of a window's file as a request wrote them, by their CRC-32."""

    name: str
    start: int
    end: int
    crc: int


class Record(msgspec.Struct, omit_defaults=True):
    """One journal entry: the state after a step, and what that step did."""

    seq: int
    open: OpenFile | None = None
    publish: list[str] = []  # committed windows whose final names may not be durable yet
    applied: list[tuple[str, int]] = []  # the Idempotency-Keys of the round's requests, with their events
    events: int = 0  # events the round wrote
    keys: list[tuple[str, int]] | None = None  # a snapshot: every remembered key
    # The round's rows, synced together with this record: recovery keeps the record only when
    # they are all there.
    checks: list[Check] = []
    key: str | None = None  # journals of 0.2.0 and before: one request's key per record (read only)


_ENCODER = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    payload = _ENCODER.encode(record)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


class JournalDamaged(RuntimeError):
    """A journal record other than the last is unreadable: not a crash (which can only tear the
    tail), so no automatic repair; a person decides."""


def decode_journal(data: bytes) -> tuple[list[Record], list[int]]:
    """The intact records of a journal, each with the offset where it ends. A torn tail (the one
    record a crash can leave half-written) is dropped; a bad record with intact ones after it
    raises JournalDamaged."""
    records: list[Record] = []
    ends: list[int] = []
    good = 0
    while good < len(data):
        end = data.find(b"\n", good)
        record = _decode_line(data[good:end]) if end >= 0 else None
        if record is None:
            if any(_decode_line(line) is not None for line in data[good:].split(b"\n")[1:]):
                raise JournalDamaged(
                    f"record {len(records) + 1} (byte {good}) is damaged and intact records follow it"
                )
            break
        records.append(record)
        good = end + 1
        ends.append(good)
    return records, ends


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

    def read(self) -> tuple[list[Record], list[int]]:
        """The intact records and where each ends. Damage (a bad record before intact ones, or an
        unreadable first record, which is always written whole) raises JournalDamaged."""
        data = self.path.read_bytes() if self.path.exists() else b""
        try:
            records, ends = decode_journal(data)
        except JournalDamaged as exc:
            raise JournalDamaged(f"{self.path} is damaged: {exc}; {_ADVICE}") from None
        if data and not records:
            # Starting afresh would delete the open window's rows: leave the decision to a person.
            raise JournalDamaged(f"{self.path} is unreadable; {_ADVICE}")
        return records, ends

    def resume(self, records: int, end: int, snapshot_size: int) -> None:
        """Append after the first `records` records, ending at byte `end`: a torn tail is cut off in
        place (needs no free space, so it works on a full disk too)."""
        self.close()
        self.fd = os.open(self.path, os.O_WRONLY)
        os.ftruncate(self.fd, end)
        self.size, self.records, self._snapshot_size = end, records, snapshot_size

    def appended(self, line: bytes) -> None:
        """The round that wrote `line` at `size` is durable: the record is part of the journal."""
        self.size += len(line)
        self.records += 1

    def discard_unfinished(self) -> None:
        """A round failed: its record must not outlive it (best effort; recovery also checks)."""
        try:
            if self.fd is not None:
                os.ftruncate(self.fd, self.size)
        except OSError:
            pass

    def replace(self, snapshot: Record) -> None:
        """Replace the journal by one record of the whole state, atomically (write, sync, rename,
        sync the directory)."""
        line = encode_record(snapshot)
        tmp = self.path.with_name(JOURNAL + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.disk.write(fd, [line], 0)
            if self.fsync:
                self.disk.sync_data(fd)
            os.replace(tmp, self.path)
        except OSError:
            os.close(fd)
            raise
        # From the rename on, this descriptor is the journal: switch before anything else can fail.
        old, self.fd = self.fd, fd
        self.size = self._snapshot_size = len(line)
        self.records = 1
        if old is not None:
            os.close(old)
        if self.fsync:
            self.disk.sync_directory()

    def due(self, max_keys: int) -> bool:
        """Time for a snapshot: many records (each start replays them) or many bytes (a round
        spanning many windows writes kilobytes; each start reads the journal whole). Never sooner
        than twice the snapshot itself, which holds every key."""
        return self.records > max(1000, 2 * max_keys) or self.size > max(self.compact_bytes, 2 * self._snapshot_size)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
