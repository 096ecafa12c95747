"""What recovery reads back: the journal's records up to the last one whose rows all reached the
disk, and the Idempotency-Keys they applied. The writer installs the state they give."""

from __future__ import annotations

import logging
import zlib

from batched_event_api.commit.journal import Journal, Record
from batched_event_api.commit.keys import KeyStore
from batched_event_api.commit.partfiles import PartFiles

log = logging.getLogger("batched_event_api.writer")


def durable_records(journal: Journal, parts: PartFiles) -> tuple[list[Record], list[int]]:
    """The journal's intact records and where each ends, without a last record whose rows did
    not all reach the disk: a power cut can persist a record but not the rows its round wrote
    beside it, and then that round was never acknowledged."""
    records, ends = journal.read()
    if len(records) > 1 and not rows_are_there(parts, records[-1]):
        log.warning(
            "the last request's rows did not reach the disk before a crash: it was never acknowledged, rolling it back"
        )
        records.pop()
        ends.pop()
    return records, ends


def rows_are_there(parts: PartFiles, record: Record) -> bool:
    """Are the bytes a record names all on disk, as written? (Only the last record can lack them.)"""
    for check in record.checks:
        # The window's own file: in progress, or finished under the name the journal gives it
        # (never a file another program put at its intended name).
        data = parts.read_range(check.name, check.start, check.end, record.moved.get(check.name))
        if data is None or len(data) != check.end - check.start or zlib.crc32(data) != check.crc:
            return False
    return True


def remember_keys(keys: KeyStore, records: list[Record], now: float) -> None:
    """The keys the records applied, each kept for the retention from when it was applied."""
    keys.replace([])
    for record in records:
        if record.kept is not None:
            keys.replace(record.kept)
        elif record.keys is not None:  # a snapshot of 0.3: its keys are kept for the retention from now
            keys.replace((key, events, now) for key, events in record.keys)
        at = record.at or now
        if record.key is not None:
            keys.remember(record.key, record.events, at)
        for key, events in record.applied:
            keys.remember(key, events, at)
    keys.expire(now)
