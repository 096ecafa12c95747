"""The writer: commit rounds, publishing and recovery of one directory, the commit protocol that
docs/design.md describes (that is its one description). Its parts each keep one concern: the part
files (partfiles.py), the journal (journal.py), the keys (keys.py), a round's syncs (sync.py), where
a round's rows go (placement.py), what recovery reads back (recovery.py), the disk (disk.py)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from batched_event_api.commit.disk import FILE_MODE, LocalDisk, describe, take_lock
from batched_event_api.commit.journal import (
    COMPACT_BYTES,
    Journal,
    OpenFile,
    Record,
    encode_record,
    window_fields,
)
from batched_event_api.commit.keys import KeyStore, key_cost
from batched_event_api.commit.partfiles import PartFiles, csv_suffix, finished_stem
from batched_event_api.commit.placement import Committed, Placement, RoundState
from batched_event_api.commit.recovery import durable_records, remember_keys
from batched_event_api.commit.sync import SYNCFS_FROM, SyncRound, Write
from batched_event_api.commit.windows import StrictWindows, WindowPolicy
from batched_event_api.config import DEFAULTS, Compress
from batched_event_api.errors import StorageError
from batched_event_api.events.rows import Rows
from batched_event_api.events.transcode import Batch

log = logging.getLogger("batched_event_api.writer")

# Bytes of rows up to which a round may run on the event loop (light()): a pwrite of
# that much to the page cache and the writer's bookkeeping for its requests take well under a
# millisecond, the stall every other connection sees.
LIGHT_BYTES = 32 * 1024
_LIGHT_EXPIRIES = 64  # keys a light round may expire (after a quiet hour, thousands may be due at once)


@dataclass(frozen=True, slots=True)
class Request:
    """One request's events (times and rows, in arrival order), with its Idempotency-Key."""

    batch: Batch
    key: str | None = None


@dataclass(slots=True)
class Applied:
    accepted: int
    replay: bool = False
    late: int = 0
    committed: list[Committed] = field(default_factory=list)
    # Not written: the Idempotency-Key store is full (--key-memory) until older keys expire in
    # this many seconds. Retryable: the client is answered 503 with Retry-After.
    keys_full: float | None = None


class Writer:
    """Appends batches of rendered rows to window files, durably and atomically. Not thread-safe:
    the server calls it from one thread only."""

    def __init__(
        self,
        directory: Path,
        policy: WindowPolicy | StrictWindows,
        *,
        fsync: bool = DEFAULTS.fsync,
        header: str = "",
        key_retention: float = DEFAULTS.key_retention,
        key_memory: int = DEFAULTS.key_memory,
        compress: Compress = DEFAULTS.csv_compression,
        syncfs_from: int | None = SYNCFS_FROM,
        disk: LocalDisk | None = None,
        compact_bytes: int = COMPACT_BYTES,
        file_mode: int = FILE_MODE,
        clock: Callable[[], float] = time.time,
        window_ids: bool = False,
        max_file_bytes: int | None = DEFAULTS.max_file_bytes,
    ) -> None:
        self.directory = Path(directory)
        self.policy = policy
        self.fsync = fsync
        self.file_mode = file_mode
        self.disk = disk or LocalDisk(self.directory, mode=file_mode)
        self._clock = clock  # wall time: a key's retention runs across restarts
        # A round with this many files (data, journal, directory) makes them durable with one
        # syncfs() of the output filesystem instead of one fdatasync each; None: never.
        self.sync = SyncRound(self.disk, fsync=fsync, syncfs_from=syncfs_from)
        self.header = header.encode()
        self.journal = Journal(self.directory, self.disk, fsync=fsync, compact_bytes=compact_bytes)
        # window_ids (a bucket as output): each window's name carries an id the uploader recognises it by.
        self.parts = PartFiles(self.disk, csv_suffix(compress), window_ids=window_ids)
        self.placement = Placement(
            self.parts, self.sync, header=self.header, compress=compress, max_file_bytes=max_file_bytes
        )
        self.windows: dict[int, OpenFile] = {}  # the open windows by start, in the order they were opened
        self.watermark: int | None = None  # strict windows: the greatest event time accepted
        self.keys = KeyStore(key_retention, key_memory)
        self.seq = 0
        self._publish: list[str] = []
        self._moved: dict[str, str] = {}  # windows of _publish whose final name another file took
        self._fds: dict[int, int] = {}  # the open windows' part files, by start
        # Recovered windows this configuration cannot continue (see _unfit): the next round commits them.
        self._unfit: list[int] = []
        self._lock_fd: int | None = None
        self._broken = True  # until recover() has run
        self._compaction_failing = False  # said once, not after every round that retries it
        # Windows the last durable record names (its checks and publish list): recovery reads
        # them back, so their finished files must stay (an uploader waits for them to leave).
        self.pinned: frozenset[str] = frozenset()
        self.problem = ""  # the last storage error, as a client may read it

    @property
    def healthy(self) -> bool:
        return not self._broken

    @property
    def open(self) -> OpenFile | None:
        """The window opened last: the one open window of the first-event policy."""
        return next(reversed(self.windows.values()), None)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the directory (one server per directory) and recover its state. Idempotent."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750 if self.file_mode & 0o040 else 0o700)
        self._lock_fd = take_lock(self.directory, self.file_mode)
        self.disk.open()
        self.recover(compact=True)

    def close(self) -> None:
        self._close_fds()
        self.disk.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self, *, compact: bool = False) -> None:
        """Bring the directory to the state of the last durable journal record."""
        self._close_fds()
        records, ends = durable_records(self.journal, self.parts)
        now = self._clock()
        remember_keys(self.keys, records, now)
        last = records[-1] if records else Record(seq=0)
        self.seq = last.seq
        self.watermark = last.watermark
        self._publish = list(last.publish)
        self._moved = {name: last.moved[name] for name in self._publish if name in last.moved}
        self._pin(last)
        self.windows = {}
        for window in last.opened():  # cut to its recorded size before it is made durable (see _make_state_durable)
            self._fds[window.start], size = self.parts.reopen(window.name, window.size)
            if size < window.size:  # a snapshot's window, when fsync was off and the machine lost power
                log.warning("%s is %d bytes, %d were recorded: keeping what is there", window.name, size, window.size)
                window = msgspec.structs.replace(window, size=size)
            self.windows[window.start] = window
        if not isinstance(self.policy, StrictWindows):
            # The first-event policy has no watermark and no late files: its record stays as
            # versions before strict windows read it (a downgrade keeps the open window).
            self.watermark = None
            self.windows = {s: msgspec.structs.replace(w, late=False) for s, w in self.windows.items()}
        self._unfit = [w.start for w in self.windows.values() if self._unfit_window(w, last)]
        if self.fsync:
            self._make_state_durable()
        self._resume_journal(records, ends, compact=compact)
        published = self._publish_pending()  # may append a record (a name another file took)
        if self.fsync:
            self.disk.sync_directory()  # before any record stops listing them
            self.journal.name_unsynced = False
        # Committed windows not published yet (their rename failed) stay too.
        self.parts.remove_strays([*self._publish, *(w.name for w in self.windows.values())])
        self._broken = not published  # a publish that failed is retried at the next step

    def _unfit_window(self, window: OpenFile, last: Record) -> bool:
        """Can this configuration not go on with a recovered window? Its file is encoded as
        another --compress wrote it (appending would mix encodings), or strict windows of another
        interval or --align left it (new events would not lie in its bounds)."""
        stem = finished_stem(window.name)
        if stem is None or stem[1] != self.parts.suffix:
            return True
        return isinstance(self.policy, StrictWindows) and last.interval != self.policy.interval

    def _window_fields(self, windows: list[OpenFile], watermark: int | None) -> dict[str, Any]:
        strict = isinstance(self.policy, StrictWindows)
        return window_fields(windows, watermark, self.policy.interval if strict else None)

    def _resume_journal(self, records: list[Record], ends: list[int], *, compact: bool) -> None:
        """Append after the intact records, or replace them by a snapshot (at start, or when
        there is none). A full disk must not keep the server from starting: it then carries on
        with the journal as it is."""
        good = ends[-1] if ends else 0
        if not records:
            self._write_snapshot()
        elif compact:
            try:
                self._write_snapshot()
            except OSError as exc:  # a full disk must not keep the server from starting
                if self.journal.name_unsynced:
                    # The snapshot is the journal now (renamed), only its name is not durable yet:
                    # recovery syncs the directory below. Never resume the old records' offsets
                    # on it.
                    log.warning(
                        "syncing the directory after compacting the journal failed (%s: %s): retried",
                        describe(exc),
                        exc,
                    )
                    return
                log.warning("could not compact the journal (%s: %s): carrying on with it as it is", describe(exc), exc)
                self.journal.resume(len(records), good, snapshot_size=ends[0])
        else:
            self.journal.resume(len(records), good, snapshot_size=ends[0])

    def _make_state_durable(self) -> None:
        """fdatasync every file the recovered state names, and their directory. The last record's
        round may have been cut short by the crash, leaving its bytes in the page cache only: read
        back with the right CRCs, but lost at the next power cut although the resend is answered
        as a replay. The open window is synced after its cut: bytes of a refused round may have
        been synced past its recorded size, and once the window is closed and published, no
        recovery cuts it again."""
        names = [*(w.name for w in self.windows.values()), *self._publish]
        fds = self.parts.open_all([(name, self._moved.get(name, name)) for name in names])
        try:
            self.sync.sync_files(fds, directory=True)
        finally:
            for fd in fds:
                os.close(fd)

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        self.journal.close()

    # -- requests ---------------------------------------------------------------------------

    def light(self, requests: Sequence[Request]) -> bool:
        """Is this round cheap enough for the event loop (the caller's thread, with the writer
        otherwise idle)? Only without fsync, and only a round that appends at most LIGHT_BYTES
        of rows to the one window already open: no file created, nothing compressed, synced,
        published, rolled over or compacted, and few keys expired. Exact about the bytes and
        windows; the round itself still decides where each row goes, as on the writer thread."""
        if self.fsync or self._broken or self._publish or self._unfit or not self.placement.plain:
            return False
        if isinstance(self.policy, StrictWindows) or len(self.windows) != 1:
            return False
        size = sum(r.batch.rows.size for r in requests)  # the CSV bytes written (not the bodies')
        (window,) = self.windows.values()
        limit = self.placement.max_file_bytes
        if size > LIGHT_BYTES or (limit is not None and window.size + size >= limit):
            return False
        # The record: its window and checks, and each key it applies (a compaction writes every key).
        record = 4096 + sum(key_cost(r.key) for r in requests if r.key is not None)
        if self.journal.due(len(self.keys), records=1, size=record):
            return False
        if self.keys.expiring(self._clock(), _LIGHT_EXPIRIES) >= _LIGHT_EXPIRIES:
            return False
        end = window.start + self.policy.interval
        # An event past the window's end opens the next one (an event before its start joins it, late).
        return all(not len(r.batch.times) or max(r.batch.times) < end for r in requests)

    def apply(self, times: Sequence[int], rows: Rows, key: str | None = None) -> Applied:
        """Write one request's rows; when this returns, they are durable (with fsync on)."""
        return self.apply_group([Request(Batch(times, rows), key)])[0]

    def apply_group(self, requests: Sequence[Request]) -> list[Applied]:
        """Write a group of requests in one round (group commit): placed one after another, as if
        applied one at a time in this order, then one journal record and one sync round for all.
        When this returns, every one is durable (with fsync on). Any error fails them all and
        leaves the state exactly as the last record says (a storage error: at the next step's
        recovery; any other: now). A key seen earlier, or earlier in the group, is a replay."""
        if all(self._is_replay_or_noop(r) for r in requests):  # nothing to write: no round
            return [
                Applied(self.keys.get(r.key) or 0, replay=True) if r.key is not None else Applied(0) for r in requests
            ]
        self._ensure_healthy()
        now = self._clock()
        self.keys.expire(now)
        state = RoundState(
            dict(self.windows), dict(self._fds), list(self._publish), taken=self._taken(), watermark=self.watermark
        )
        try:
            with self._storage_step():
                cap = self.policy.max_open if isinstance(self.policy, StrictWindows) else None
                retired = self.placement.retire(state, self._unfit, cap)
                results = [self._place(r, state, now) for r in requests]
                self.placement.flush(state)
                written = bool(state.events or state.keys)
                if written:
                    if retired:  # counted with the round's first request that writes
                        next(a for a in results if not a.replay and a.keys_full is None).committed[:0] = retired
                    record = Record(
                        self.seq + 1,
                        **self._window_fields(list(state.windows.values()), state.watermark),
                        publish=state.publish,
                        moved=self._moved_for(state.publish),
                        applied=list(state.keys.items()),
                        at=now,
                        events=state.events,
                        checks=state.checks,
                    )
                    self._commit(record, state.writes, new_entries=bool(state.created))
        except Exception as exc:
            self._abandon(state, exc)
            raise
        if not written:
            # Every request refused (a full key store): no round, so nothing it could publish, and
            # the directory was not synced: the names published before stay listed.
            return results
        keep = set(state.fds.values())  # the part files of the windows open from now on
        for fd in [*self._fds.values(), *state.created]:
            if fd not in keep:
                os.close(fd)
        self.windows, self._fds, self.watermark = state.windows, state.fds, state.watermark
        self._unfit = []
        for key, events in state.keys.items():
            self.keys.remember(key, events, now)
        try:  # the round is durable and its requests are answered as such, whatever comes next
            self._published(state.publish)
            self._maybe_compact()
        except Exception:
            log.exception("after a commit round (its requests are committed; the next step recovers)")
            self._broken = True
        return results

    def _abandon(self, state: RoundState, exc: Exception) -> None:
        """A round failed: none of it may count. Its record is cut off, its descriptors closed,
        and recovery runs now (truncate the open window to its recorded size, remove the new part
        files: that needs no free space); where it fails too, the next step tries again."""
        for fd in state.created:
            with contextlib.suppress(OSError):
                os.close(fd)
        state.created.clear()
        self.journal.discard_unfinished()
        self._broken = True
        if not isinstance(exc, StorageError):
            log.error(
                "a commit round failed (%s: %s): its requests are refused, rolling it back",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            self.problem = f"internal error: {type(exc).__name__}"
        try:
            self.recover()
        except Exception as again:  # noqa: BLE001  # stays broken: the next step tries again
            log.error("rolling back a failed round: %s", again)
            self._broken = True

    def _taken(self) -> set[str]:
        """Names no new window may take: the open ones', those to publish and where they go."""
        return {*self._publish, *self._moved.values(), *(w.name for w in self.windows.values())}

    def _moved_for(self, publish: list[str]) -> dict[str, str]:
        return {name: self._moved[name] for name in publish if name in self._moved}

    def _is_replay_or_noop(self, request: Request) -> bool:
        return (request.key is not None and request.key in self.keys) or (
            request.key is None and len(request.batch.times) == 0
        )

    def _place(self, request: Request, state: RoundState, now: float) -> Applied:
        """One request's part of a round: a replay (its key applied before, or earlier in this
        round), refused (no room for its key), or its rows placed."""
        key = request.key
        if key is not None:
            known = state.keys.get(key, self.keys.get(key))
            if known is not None:
                return Applied(accepted=known, replay=True)
            if self.keys.bytes + state.key_bytes + key_cost(key) > self.keys.max_bytes:
                oldest = self.keys.oldest()
                wait = max(1.0, oldest + self.keys.retention - now) if oldest is not None else 1.0
                return Applied(accepted=0, keys_full=wait)
            state.keys[key] = len(request.batch.times)
            state.key_bytes += key_cost(key)
        times = request.batch.times
        if len(times) == 0:
            return Applied(accepted=0)
        if isinstance(self.policy, StrictWindows):
            groups = self.policy.group(times)
            closed, late = self.placement.place_groups(self.policy, groups, max(times), request.batch.rows, state)
        else:
            newest = state.newest
            plan = self.policy.plan(newest.start if newest else None, times)
            closed, late = self.placement.place_segments(plan, request.batch.rows, state), plan.late
        state.events += len(times)
        return Applied(accepted=len(times), late=late, committed=closed)

    def commit_open(self) -> list[Committed]:
        """Commit every open window now (idle timeout, shutdown), oldest first."""
        if not self.windows:
            return []
        self._ensure_healthy()
        closed = [Committed(w.name, w.rows, w.size) for _, w in sorted(self.windows.items())]
        publish = self._publish + [c.name for c in closed]
        with self._storage_step():
            self._commit(
                Record(
                    self.seq + 1,
                    **self._window_fields([], self.watermark),
                    publish=publish,
                    moved=self._moved_for(publish),
                ),
                [],
                new_entries=False,
            )
        for fd in self._fds.values():
            os.close(fd)
        self.windows, self._fds, self._unfit = {}, {}, []
        try:  # the windows are committed, whatever comes next
            self._published(publish)
        except Exception:
            log.exception("after committing the open windows (they are committed; the next step recovers)")
            self._broken = True
        return closed

    def heal(self) -> bool:
        """Try to recover after a storage error; True when every committed window is published
        and the writer can take requests again."""
        try:
            self._ensure_healthy()
        except StorageError:
            return False
        except Exception:
            log.exception("recovering the writer")
            return False
        return not self._broken

    def _ensure_healthy(self) -> None:
        if self._broken:
            with self._storage_step():
                self.recover()

    @contextlib.contextmanager
    def _storage_step(self) -> Iterator[None]:
        """An OSError inside means the disk state is unknown: recover before the next step, and
        tell the client 503. Any other error leaves the state unknown too (a record written but
        not synced, a rename not done): the next step recovers from the journal all the same."""
        try:
            yield
        except OSError as exc:
            self._broken = True
            self.problem = describe(exc)
            log.error("%s: %s", self.problem, exc)  # the log has the path; the client's answer not
            raise StorageError(self.problem, errno=exc.errno) from exc
        except Exception as exc:
            self._broken = True
            self.problem = f"internal error: {type(exc).__name__}"
            raise

    def _commit(self, record: Record, writes: list[Write], *, new_entries: bool) -> None:
        """Steps 1 and 2 in one round: the rows, the record and the directory written and synced
        side by side. The record may reach the disk before the rows: recovery checks for that."""
        line = encode_record(record)
        # The directory too for new part files, windows published since the last round, or the
        # journal's own name after a compaction whose directory sync failed.
        directory = new_entries or bool(self._publish) or self.journal.name_unsynced
        assert self.journal.fd is not None, "a round runs on a recovered writer"
        try:
            self.sync.run(writes, journal=(self.journal.fd, line, self.journal.size), directory=directory)
        except Exception:  # not only a storage error: the record must never count
            self.journal.discard_unfinished()
            raise
        if directory:
            self.journal.name_unsynced = False
        self.journal.appended(line)
        self._pin(record)
        self.seq = record.seq

    def _pin(self, record: Record) -> None:
        self.pinned = frozenset(
            [
                *(record.moved.get(check.name, check.name) for check in record.checks),
                *(record.moved.get(name, name) for name in record.publish),
            ]
        )

    def settle(self) -> None:
        """Make the published names durable and replace the journal with a snapshot that names no
        finished window (an idle or final commit): nothing stays pinned."""
        if not self.healthy:
            return
        with self._storage_step():
            if not self._publish_pending():
                return
            if self.fsync:
                self.disk.sync_directory()
            self._publish = []  # every name in it is renamed (healthy), and now durable
            self._moved = {}
            self._write_snapshot()

    def _published(self, publish: list[str]) -> None:
        """After a round: publish the windows it committed. Names published before it are
        durable now (the round synced the directory) and drop out of the list."""
        self._publish = publish
        self._moved = self._moved_for(publish)
        self._publish_pending()

    def _publish_pending(self) -> bool:
        """Step 3: committed part files get their final names. self._publish keeps the names this
        published (or could not), so the next record lists them until a round syncs the directory.
        A final name some other file took: the next free -N name is recorded in the journal first
        (so recovery knows which file is the window's), then the window is published there."""
        try:
            renamed, blocked = self.parts.publish(self._publish, self._moved)
            for _ in range(3):  # a name taken again between the record and the rename: once more
                if not blocked:
                    break
                taken = self._taken()
                for name in blocked:
                    free = self.parts.free_name(name, taken)
                    taken.add(free)
                    log.warning(
                        "%s is held by a file this server did not write: publishing that window as %s",
                        self._moved.get(name, name),
                        free,
                    )
                    self._moved[name] = free
                self._commit(
                    Record(
                        self.seq + 1,
                        **self._window_fields(list(self.windows.values()), self.watermark),
                        publish=self._publish,
                        moved=dict(self._moved),
                    ),
                    [],
                    new_entries=False,
                )
                more, blocked = self.parts.publish(blocked, self._moved)
                renamed += more
            if blocked:
                raise OSError(errno.EEXIST, f"{len(blocked)} windows' names keep being taken by other files")
        except OSError as exc:
            # The windows are durable in the journal; the renames are retried on the next step.
            self.problem = describe(exc)
            log.error("could not publish committed windows yet: %s (%s)", self.problem, exc)
            self._broken = True
            return False
        self._publish = renamed
        return True

    # -- journal ----------------------------------------------------------------------------

    def _write_snapshot(self) -> None:
        """Replace the journal with one record of the whole state (atomically)."""
        snapshot = Record(
            self.seq,
            **self._window_fields(list(self.windows.values()), self.watermark),
            publish=self._publish,
            moved=self._moved_for(self._publish),
            kept=self.keys.items(),
        )
        self.journal.replace(snapshot)
        self._pin(snapshot)

    def _maybe_compact(self) -> None:
        if self.journal.due(len(self.keys)):
            try:
                self._write_snapshot()
            except OSError as exc:
                if not self._compaction_failing:
                    log.error(
                        "journal compaction failed, retried after every round until it works: %s (%s)",
                        describe(exc),
                        exc,
                    )
                self._compaction_failing = True
                return
            if self._compaction_failing:
                log.info("journal compaction works again")
                self._compaction_failing = False
