"""The part-file writer: the only module that touches the output directory.

Life cycle of a window's file, as in Flink's FileSink: in-progress (a hidden `.NAME.inprogress`
that no `*.csv` glob matches) -> committed (`NAME.csv`, never changed again).

Commit protocol, one request at a time:
1. Write the request's rows: appended to the open window's part file, and into new part files for
   the windows it opens. Write one checksummed journal record: the open window (name, start, size),
   the windows to publish, the Idempotency-Key, and a CRC-32 of every byte range the request wrote.
2. fdatasync the files written, the journal (and the directory when a file was created) all at
   once: one round of concurrent syncs, which the filesystem folds into few journal commits. The
   client gets its 200 only after this; the record is the commit point.
3. Publish the closed windows: rename part -> final name, never replacing a file (renameat2
   RENAME_NOREPLACE; else hard link, then unlink). The directory is synced in the next round;
   until then the next record lists them again.
Recovery reads the last intact journal record and keeps it only if the bytes it names are all
there with their CRCs (a power cut can persist the record but not the rows: then the request was
never acknowledged and the record before it is the state). Bytes read back after a process crash
may sit only in the page cache, so before it keeps that record, publishes or answers anything, it
makes every file the record names durable (the request may have been answered 200 by then, as a
replay of its resend). It finishes step 3, truncates the open part file to the recorded size and
deletes part files no record names: whatever a request wrote before its round completed
disappears, whatever was acknowledged stays, exactly once. Only the last record can be torn by a
crash: a bad record followed by intact ones is damage, and the start is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .errors import StorageError
from .storage import LocalDisk, describe
from .timestamps import utc_stamp
from .windows import Plan, WindowPolicy

if TYPE_CHECKING:
    from .prepare import Rows

log = logging.getLogger("batched_event_api.writer")

JOURNAL = ".journal"
COMPACT_BYTES = 4 << 20  # journal size from which it is compacted (and never below twice a snapshot)
SYNCFS_FROM = 8  # files in one sync round from which one syncfs() replaces their fdatasyncs
LOCK = ".lock"
PART_SUFFIX = ".inprogress"


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


@dataclass(frozen=True, slots=True)
class Committed:
    name: str
    rows: int
    size: int


@dataclass(frozen=True, slots=True)
class Request:
    """One request's prepared rows, in arrival order, with its Idempotency-Key."""

    times: Sequence[int]
    rows: Rows
    key: str | None = None


@dataclass(slots=True)
class Applied:
    accepted: int
    replay: bool = False
    late: int = 0
    committed: list[Committed] = field(default_factory=list)


def part_name(name: str) -> str:
    """`user-events-X.csv` -> `.user-events-X.inprogress`: invisible to `*.csv*` and to dot-skipping readers."""
    return "." + name.split(".", 1)[0] + PART_SUFFIX


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


class Writer:
    """Appends batches of rendered rows to window files, durably and atomically. Not thread-safe:
    the server calls it from one thread only."""

    def __init__(
        self,
        directory: Path,
        policy: WindowPolicy,
        *,
        fsync: bool = True,
        header: str = "",
        max_keys: int = 10_000,
        compress: bool = False,
        syncfs_from: int | None = SYNCFS_FROM,
        disk: LocalDisk | None = None,
        compact_bytes: int = COMPACT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.policy = policy
        self.fsync = fsync
        self.disk = disk or LocalDisk()
        # A round with this many files (data, journal, directory) makes them durable with one
        # syncfs() of the output filesystem instead of one fdatasync each; None: never.
        self.syncfs_from = syncfs_from if self.disk.has_syncfs else None
        self.header = header.encode()
        self.max_keys = max_keys
        self.compact_bytes = compact_bytes
        # Compressed files get one gzip member per write: concatenated members are one valid gzip
        # stream, so appending and truncating at a recorded size keep the file readable.
        self.suffix = ".csv.gz" if compress else ".csv"
        self._encode = _gzip if compress else _identity
        self.open: OpenFile | None = None
        self.keys: OrderedDict[str, int] = OrderedDict()
        self.seq = 0
        self._publish: list[str] = []
        self._open_fd: int | None = None
        self._dir_fd: int | None = None
        self._journal_fd: int | None = None
        self._journal_size = 0
        self._journal_records = 0
        self._snapshot_size = 0
        self._lock_fd: int | None = None
        self._broken = True  # until recover() has run
        self.problem = ""  # the last storage error, as a client may read it
        # Writes and syncs of a request's files run side by side: a thread blocked in fdatasync
        # costs nothing, and concurrent syncs share the filesystem's journal commits.
        self._io_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="io")

    @property
    def healthy(self) -> bool:
        return not self._broken

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the directory (one server per directory) and recover its state. Idempotent."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"{self.directory} is in use by another batched-event-api") from None
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self.recover(compact=True)

    def close(self) -> None:
        self._io_pool.shutdown()
        self._close_fds()
        for fd in (self._dir_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._dir_fd = self._lock_fd = None

    def recover(self, *, compact: bool = False) -> None:
        """Bring the directory to the state of the last durable journal record."""
        self._close_fds()
        path = self.directory / JOURNAL
        data = path.read_bytes() if path.exists() else b""
        advice = "restore it from a backup, or move it away to start afresh (in-progress windows would be discarded)"
        try:
            records, ends = decode_journal(data)
        except JournalDamaged as exc:
            raise JournalDamaged(f"{path} is damaged: {exc}; {advice}") from None
        if data and not records:
            # The first record is always written whole (by rename), so this is damage, not a crash:
            # starting afresh would delete the open window's rows. Leave the decision to a person.
            raise JournalDamaged(f"{path} is unreadable; {advice}")
        if len(records) > 1 and not self._rows_are_there(records[-1]):
            log.warning("the last request's rows did not reach the disk before a crash: it was never acknowledged, rolling it back")
            records.pop()
            ends.pop()
        good = ends[-1] if ends else 0
        self.keys.clear()
        for record in records:
            if record.keys is not None:
                self.keys = OrderedDict(record.keys)
            if record.key is not None:
                self._remember(record.key, record.events)
            for key, events in record.applied:
                self._remember(key, events)
        last = records[-1] if records else Record(seq=0)
        self.seq = last.seq
        self.open = last.open
        self._publish = list(last.publish)
        if self.fsync:
            self._make_state_durable()
        published = self._publish_pending()
        if self.fsync:
            self.disk.sync_directory(self._dir_fd)  # before any record stops listing them
        self._restore_open_part()
        # Committed windows not published yet (a foreign file holds the final name) stay too.
        keep = {part_name(name) for name in [*self._publish, *([self.open.name] if self.open else [])]}
        for entry in os.listdir(self.directory):
            if entry.endswith(PART_SUFFIX) and entry not in keep:
                log.info("removing %s: written by a request that was never acknowledged", entry)
                os.unlink(self.directory / entry)
        if not records or compact:
            self._write_snapshot()
        else:
            # Drop a torn tail in place: needs no free space, so it works on a full disk too.
            self._journal_fd = os.open(path, os.O_WRONLY)
            os.ftruncate(self._journal_fd, good)
            self._journal_size = good
            self._journal_records = len(records)
            self._snapshot_size = ends[0]
        self._broken = not published  # a publish that failed is retried at the next step

    def _make_state_durable(self) -> None:
        """fdatasync every file the recovered state names, and their directory. The last record's
        round may have been cut short by the crash, leaving its bytes in the page cache only: read
        back with the right CRCs, but lost at the next power cut although the resend is answered
        as a replay."""
        names = [*([self.open.name] if self.open else []), *self._publish]
        fds = []
        try:
            for name in names:
                for candidate in (part_name(name), name):  # not published yet, or published
                    with contextlib.suppress(FileNotFoundError):
                        fds.append(os.open(self.directory / candidate, os.O_RDONLY))
                        break
            if self._by_filesystem(len(fds) + 1):
                self.disk.sync_filesystem(self._dir_fd)
            else:
                self._fdatasync_all([*fds, self._dir_fd])
        finally:
            for fd in fds:
                os.close(fd)

    def _rows_are_there(self, record: Record) -> bool:
        """Are the bytes a record names all on disk, as written? (Only the last record can lack them.)"""
        for check in record.checks:
            for name in (part_name(check.name), check.name):  # published already, or not yet
                try:
                    with open(self.directory / name, "rb") as f:
                        f.seek(check.start)
                        data = f.read(check.end - check.start)
                    break
                except FileNotFoundError:
                    continue
            else:
                return False
            if len(data) != check.end - check.start or zlib.crc32(data) != check.crc:
                return False
        return True

    def _restore_open_part(self) -> None:
        if self.open is None:
            return
        path = self.directory / part_name(self.open.name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        actual = os.fstat(fd).st_size
        if actual > self.open.size:
            os.ftruncate(fd, self.open.size)
        elif actual < self.open.size:
            # Only possible when fsync was off and the machine lost power.
            log.warning("%s is %d bytes, %d were recorded: keeping what is there", path.name, actual, self.open.size)
            self.open.size = actual
        self._open_fd = fd

    def _close_fds(self) -> None:
        for fd in (self._open_fd, self._journal_fd):
            if fd is not None:
                os.close(fd)
        self._open_fd = self._journal_fd = None

    # -- requests ---------------------------------------------------------------------------

    def apply(self, times: Sequence[int], rows: Rows, key: str | None = None) -> Applied:
        """Write one request's rows; when this returns, they are durable (with fsync on)."""
        return self.apply_group([Request(times, rows, key)])[0]

    def apply_group(self, requests: Sequence[Request]) -> list[Applied]:
        """Write a group of requests in one round (group commit): placed one after another, as if
        applied one at a time in this order, then one journal record and one sync round for all.
        When this returns, every one is durable (with fsync on); a storage error fails them all
        and leaves the state as it was. A key seen earlier, or earlier in the group, is a replay."""
        if all(self._is_replay_or_noop(r) for r in requests):
            return [self._place(r, None) for r in requests]
        self._ensure_healthy()
        state = _RoundState(self.open, self._open_fd, list(self._publish),
                            taken={*self._publish, *([self.open.name] if self.open else [])})
        try:
            with self._storage_step():
                results = [self._place(r, state) for r in requests]
                if state.events or state.keys:
                    record = Record(self.seq + 1, open=state.open, publish=state.publish,
                                    applied=list(state.keys.items()), events=state.events,
                                    checks=state.checks if self.fsync else [])
                    self._commit(record, state.writes, new_entries=bool(state.created))
        except StorageError:
            for fd in state.created:
                os.close(fd)
            raise
        if state.created:  # the newest part file is the open window from now on
            for fd in [self._open_fd, *state.created[:-1]]:
                if fd is not None:
                    os.close(fd)
            self._open_fd = state.created[-1]
        self.open = state.open
        for key, events in state.keys.items():
            self._remember(key, events)
        self._published(state.publish)
        self._maybe_compact()
        return results

    def _is_replay_or_noop(self, request: Request) -> bool:
        return (request.key is not None and request.key in self.keys) or (request.key is None and len(request.times) == 0)

    def _place(self, request: Request, state: _RoundState | None) -> Applied:
        """One request's part of a round (state None: a round that writes nothing)."""
        key = request.key
        if key is not None:
            known = self.keys.get(key) if state is None else state.keys.get(key, self.keys.get(key))
            if known is not None:
                return Applied(accepted=known, replay=True)
        if state is None or (len(request.times) == 0 and key is None):
            return Applied(accepted=0)
        if key is not None:
            state.keys[key] = len(request.times)
        if len(request.times) == 0:
            return Applied(accepted=0)
        plan = self.policy.plan(state.open.start if state.open else None, request.times)
        closed = self._place_segments(plan, request.times, request.rows, state)
        state.events += len(request.times)
        return Applied(accepted=len(request.times), late=plan.late, committed=closed)

    def commit_open(self) -> list[Committed]:
        """Commit the open window now (idle timeout, shutdown)."""
        if self.open is None:
            return []
        self._ensure_healthy()
        closed = Committed(self.open.name, self.open.rows, self.open.size)
        publish = self._publish + [closed.name]
        with self._storage_step():
            self._commit(Record(self.seq + 1, open=None, publish=publish), [], new_entries=False)
        self.open = None
        self._published(publish)
        return [closed]

    def heal(self) -> bool:
        """Try to recover after a storage error; True when every committed window is published
        and the writer can take requests again."""
        try:
            self._ensure_healthy()
        except StorageError:
            return False
        return not self._broken

    def _ensure_healthy(self) -> None:
        if self._broken:
            with self._storage_step():
                self.recover()

    @contextlib.contextmanager
    def _storage_step(self) -> Iterator[None]:
        """An OSError inside means the disk state is unknown: recover before the next step, and
        tell the client 503."""
        try:
            yield
        except OSError as exc:
            self._broken = True
            self.problem = describe(exc)
            log.error("%s: %s", self.problem, exc)  # the log has the path; the client's answer not
            raise StorageError(self.problem, errno=exc.errno) from exc

    def _place_segments(self, plan: Plan, times: Sequence[int], rows: Rows, state: _RoundState) -> list[Committed]:
        """Where one request's rows go, against the round's state so far: adds the writes and
        checks to the round, moves its open window on, and returns the windows the request
        closes. A round spanning thousands of windows has its part files written, synced and
        closed in batches."""
        closed: list[Committed] = []
        if state.open is not None and plan.segments and not plan.continues_open:
            closed.append(Committed(state.open.name, state.open.rows, state.open.size))
        files: list[OpenFile] = []  # every file this request writes to, in order
        for index, segment in enumerate(plan.segments):
            count = segment.stop - segment.first
            chunks = rows.chunks(segment.first, segment.stop)
            if index == 0 and plan.continues_open:
                assert state.open is not None and state.open_fd is not None
                write = self._write_for(state.open_fd, state.open.name, state.open.size, chunks)
                files.append(OpenFile(state.open.name, state.open.start, write.check.end, state.open.rows + count))
            else:
                if len(state.created) >= _OPEN_PARTS_PER_ROUND:
                    self._round(state.writes, [])
                    state.writes = []
                    while state.created:
                        os.close(state.created.pop())
                name = self._choose_name(int(times[segment.first]), state.taken)  # named from its first event
                state.taken.add(name)
                fd = os.open(self.directory / part_name(name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                state.created.append(fd)
                header = [memoryview(self.header)] if self.header else []
                write = self._write_for(fd, name, 0, header + chunks)
                files.append(OpenFile(name, segment.window_start, write.check.end, count))
                state.open_fd = fd
            state.writes.append(write)
            state.checks.append(write.check)
        closed += [Committed(f.name, f.rows, f.size) for f in files[:-1]]
        if files:
            state.open = files[-1]
        state.publish += [c.name for c in closed]
        return closed

    def _write_for(self, fd: int, name: str, offset: int, chunks: list[memoryview]) -> _Write:
        """A write of the chunks at offset (one gzip member when compressing), with its check."""
        if self._encode is not _identity:
            chunks = [memoryview(self._encode(b"".join(chunks)))]
        crc = 0
        if self.fsync:  # what recovery checks; without fsync nothing is promised
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)
        return _Write(fd, chunks, Check(name, offset, offset + sum(map(len, chunks)), crc))

    def _write_one(self, w: _Write, sync: bool) -> None:
        self.disk.write(w.fd, w.chunks, w.check.start)
        if sync:
            self.disk.sync_data(w.fd)

    def _by_filesystem(self, files: int) -> bool:
        return self.fsync and self.syncfs_from is not None and files >= self.syncfs_from

    def _round(self, writes: list[_Write], fds: list[int], line: bytes = b"") -> None:
        """Write the files (and the journal line, if any) and make them and `fds` durable in one
        round: small writes here, then the syncs side by side; large ones each copied (and synced)
        on its own thread meanwhile. From `syncfs_from` files on, one syncfs() once all is written
        replaces the per-file syncs."""
        if line:
            fds = [self._journal_fd, *fds]
        writes = _coalesced(writes)  # a group's requests appending to one file: one write, one sync
        whole = self._by_filesystem(len(writes) + len(fds))
        tasks = []
        if sum(w.check.end - w.check.start for w in writes) < _PARALLEL_WRITES:
            for w in writes:
                self.disk.write(w.fd, w.chunks, w.check.start)
            fds = [*fds, *(w.fd for w in writes)]
        else:
            tasks = [self._io_pool.submit(self._write_one, w, self.fsync and not whole) for w in writes]
        try:
            if line:
                self.disk.write(self._journal_fd, [line], self._journal_size)
            if not whole:
                self._fdatasync_all(fds)
        finally:
            _wait_all(tasks)
        if whole:
            self.disk.sync_filesystem(self._dir_fd)

    def _commit(self, record: Record, writes: list[_Write], *, new_entries: bool) -> None:
        """Steps 1 and 2 in one round: the rows, the record and the directory written and synced
        side by side. The record may reach the disk before the rows: recovery checks for that."""
        line = encode_record(record)
        assert self._journal_fd is not None
        # The directory too for new part files, or windows published since the last round.
        dirs = [self._dir_fd] if new_entries or self._publish else []
        try:
            self._round(writes, dirs, line)
        except OSError:
            try:  # the record must not outlive the failed round
                os.ftruncate(self._journal_fd, self._journal_size)
            except OSError:
                pass
            raise
        self._journal_size += len(line)
        self._journal_records += 1
        self.seq = record.seq

    def _fdatasync_all(self, fds: list[int]) -> None:
        """fdatasync several files at once: concurrent syncs share the filesystem's journal
        commits, so a request that fills many windows does not pay one commit per file."""
        if not self.fsync or not fds:
            return
        others = [self._io_pool.submit(self._sync_one, fd) for fd in fds[1:]]
        try:
            self._sync_one(fds[0])  # one on this thread: a hand-off less
        finally:
            _wait_all(others)

    def _sync_one(self, fd: int) -> None:
        (self.disk.sync_directory if fd == self._dir_fd else self.disk.sync_data)(fd)

    def _choose_name(self, first_event: int, taken: set[str]) -> str:
        """Name from the window's first event in UTC."""
        return self._free_name(f"user-events-{utc_stamp(first_event)}", taken)

    def _free_name(self, stem: str, taken: set[str]) -> str:
        """stem + suffix, or the first of stem-1, stem-2, ... that no file has and no window reserves."""
        name = stem + self.suffix
        n = 0
        while name in taken or os.path.lexists(self.directory / name) or (
            self.open is not None and name == self.open.name
        ):
            n += 1
            name = f"{stem}-{n}{self.suffix}"
        return name

    def _published(self, publish: list[str]) -> None:
        """After a round: publish the windows it committed. Names published before it are
        durable now (the round synced the directory) and drop out of the list."""
        self._publish = publish
        self._publish_pending()

    def _publish_pending(self) -> bool:
        """Step 3: committed part files get their final names. self._publish keeps the names this
        published (or could not), so the next record lists them until a round syncs the directory."""
        pending = []
        try:
            for name in self._publish:
                part = self.directory / part_name(name)
                final = self.directory / name
                try:
                    self.disk.publish(part, final)
                except FileNotFoundError:
                    continue  # published already
                except FileExistsError:
                    if os.path.samefile(part, final):
                        os.unlink(part)  # linked before a crash
                    else:
                        self._publish_elsewhere(name, part)
                pending.append(name)
        except OSError as exc:
            # The windows are durable in the journal; the renames are retried on the next step.
            self.problem = describe(exc)
            log.error("could not publish committed windows yet: %s (%s)", self.problem, exc)
            self._broken = True
            return False
        self._publish = pending
        return True

    def _publish_elsewhere(self, name: str, part: Path) -> None:
        """A file this server did not write holds the window's name (it appeared after the name was
        chosen): publish under the next free -N name, the rule for names taken at creation. The
        journal keeps the first name; its part file is gone once this rename is durable, which
        recovery reads as 'published already'."""
        stem = _NUMBERED.sub("", name[: -len(self.suffix)])
        free = self._free_name(stem, set(self._publish))
        self.disk.publish(part, self.directory / free)
        log.warning("%s is held by a file this server did not write: published that window as %s", name, free)

    # -- journal ----------------------------------------------------------------------------

    def _write_snapshot(self) -> None:
        """Replace the journal with one record of the whole state (atomically)."""
        record = Record(self.seq, open=self.open, publish=self._publish, keys=list(self.keys.items()))
        line = encode_record(record)
        tmp = self.directory / (JOURNAL + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.disk.write(fd, [line], 0)
            if self.fsync:
                self.disk.sync_data(fd)
            os.replace(tmp, self.directory / JOURNAL)
        except OSError:
            os.close(fd)
            raise
        # From the rename on, this descriptor is the journal: switch before anything else can fail.
        old, self._journal_fd = self._journal_fd, fd
        self._journal_size = self._snapshot_size = len(line)
        self._journal_records = 1
        if old is not None:
            os.close(old)
        if self.fsync:
            self.disk.sync_directory(self._dir_fd)

    def _maybe_compact(self) -> None:
        """Replace the journal by a snapshot once it has many records (each start replays them) or
        many bytes (a request spanning many windows writes a record of kilobytes; each start reads
        the journal whole). Never sooner than twice the snapshot itself, which holds every key."""
        too_many = self._journal_records > max(1000, 2 * self.max_keys)
        too_large = self._journal_size > max(self.compact_bytes, 2 * self._snapshot_size)
        if too_many or too_large:
            try:
                self._write_snapshot()
            except OSError as exc:
                log.error("journal compaction failed, will retry: %s (%s)", describe(exc), exc)

    def _remember(self, key: str, events: int) -> None:
        self.keys[key] = events
        self.keys.move_to_end(key)
        while len(self.keys) > self.max_keys:
            self.keys.popitem(last=False)


_OPEN_PARTS_PER_ROUND = 256
_NUMBERED = re.compile(r"(?<=-\d{6})-\d+$")  # the -N of user-events-YYYYMMDD-HHMMSS-N
_PARALLEL_WRITES = 1 << 20  # bytes per request from which its files are written side by side


@dataclass(slots=True)
class _RoundState:
    """The writer's state as a round's requests are placed; installed only once its record is durable."""

    open: OpenFile | None
    open_fd: int | None
    publish: list[str]
    taken: set[str]  # names no new window may take: the open one, those to publish, this round's
    created: list[int] = field(default_factory=list)  # part files created this round (descriptors)
    writes: list[_Write] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # Idempotency-Keys applied this round
    events: int = 0


@dataclass(slots=True)
class _Write:
    fd: int
    chunks: list[memoryview]
    check: Check


def _coalesced(writes: list[_Write]) -> list[_Write]:
    """Writes that continue each other in one file, as one (for the I/O only: the record keeps
    each request's own check)."""
    out: list[_Write] = []
    for w in writes:
        last = out[-1] if out else None
        if last is not None and last.fd == w.fd and last.check.end == w.check.start:
            last.chunks.extend(w.chunks)
            last.check = Check(last.check.name, last.check.start, w.check.end, 0)
        else:
            out.append(_Write(w.fd, list(w.chunks), w.check))
    return out


def _wait_all(futures: list) -> None:
    """Wait for every future, then raise the first error among them."""
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _identity(data: bytes) -> bytes:
    return data


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)
