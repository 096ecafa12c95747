"""A stateful fault-injection test (issue 19): hypothesis explores sequences of commit rounds,
storage errors, crashes, power cuts, foreign files and symlinks, idle commits, restarts, heals
and uploads over the real Writer (and, with a bucket, the real Uploader against an in-memory
bucket), and checks them against a plain model.

The model is one entry per request sent (a "send"): its rows, unique by (uuid, id), and what is
known of it: `present` (answered, written: exactly once), `absent` (refused, a replay, keys_full:
never), `doubt` (a crash or power cut hit its round: all or nothing, never partial, never twice).
A refused request whose undo may not have reached the disk (a second fault hit the rollback) is
`absent` for a crash but in doubt for a power cut, until the writer is healthy again.

After every step the invariant asks: what would a crash now, and a power cut now, leave
committed? A copy of the directory as the page cache has it (a crash keeps it), and one of what
the disk double says is durable (tests/powercut.py), are each recovered by a fresh Writer, their
open window committed (and with a bucket: uploaded into a copy of the bucket); the windows'
rows must then equal the model. Also: no torn row, no foreign file changed or counted as ours,
no symlink followed, no file of ours readable by others, a remembered Idempotency-Key exactly
when its request's rows are there.

BEA_FAULT_EXAMPLES / BEA_FAULT_STEPS set the size of the run (default 60 examples of up to 40
steps); BEA_FAULT_RANDOM=1 explores new sequences (the default is derandomized, no database: the
same sequences every run, so not flaky). The faults injected, and how many landed where they
were aimed, are printed at the end of the module's run.
"""

from __future__ import annotations

import collections
import csv
import errno
import gzip
import hashlib
import io
import logging
import os
import random
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from batched_event_api.commit.disk import FILE_MODE, GROUP_FILE_MODE, LocalDisk
from batched_event_api.commit.journal import COMPACT_BYTES
from batched_event_api.commit.partfiles import (
    PART_SUFFIX,
    finished_stem,
    part_name,
    window_id,
)
from batched_event_api.commit.windows import StrictWindows, WindowPolicy
from batched_event_api.commit.writer import Request, Writer
from batched_event_api.config import Compress
from batched_event_api.events.render import COLUMNS, csv_line
from batched_event_api.events.rows import Rows
from batched_event_api.events.timestamps import (
    EARLIEST_NS,
    LATEST_NS,
    MAX_INTERVAL_NS,
    utc_stamp,
)
from batched_event_api.events.transcode import Batch, transcode
from batched_event_api.output.store import Finished, Identity, StoreError
from batched_event_api.output.uploader import Uploader
from model import INTERVAL, SECOND, STRINGS, ndjson, time_text
from powercut import PowerCutDisk, _writer_frames
from writer_setup import T0, Crash

HEADER = ",".join(COLUMNS) + "\n"
FOREIGN = b"FOREIGN "  # every file another program writes starts so; none of ours can
KEY_RETENTION = 3600.0

# Event times: anchors over the whole accepted range, and beyond it (the HTTP layer refuses those
# with a 400; the writer must still keep its promise for whatever it answers); steps between
# consecutive events that open, append to and close windows (and late events).
IN_RANGE = [
    T0,
    0,
    -1,
    EARLIEST_NS,
    EARLIEST_NS + 1,
    LATEST_NS - 1,
    LATEST_NS - INTERVAL,
    951_782_400 * SECOND,  # 2000-02-29
    1_483_228_799 * SECOND + SECOND - 1,
]  # 2016-12-31T23:59:59.999999999Z
BEYOND = [
    EARLIEST_NS - 1,
    EARLIEST_NS - MAX_INTERVAL_NS,
    LATEST_NS,
    LATEST_NS + INTERVAL,
    2**63 - 1,
    -(2**63),
    2**63 + 7,
    -(2**63) - INTERVAL,
]
STEPS = [0, 1, SECOND, INTERVAL - 1, INTERVAL, INTERVAL + 1, -SECOND, -INTERVAL, 2 * INTERVAL + 7, 7 * INTERVAL]

# The disk operations of LocalDisk (exists() is os.path.lexists, which never raises).
READS = frozenset({"open_read", "read_range", "read_all", "names", "same_file"})
MUTATING = frozenset(
    {
        "create",
        "reopen",
        "open_append",
        "write",
        "sync_data",
        "sync_directory",
        "sync_filesystem",
        "publish",
        "remove",
        "replace",
    }
)
NAME_OPS = frozenset({"create", "publish", "remove", "replace"})
FAULT_OPS = {
    "eio": READS | MUTATING,
    "enospc": frozenset(
        {"create", "reopen", "write", "sync_data", "sync_directory", "sync_filesystem", "publish", "replace"}
    ),
    "runtime": READS | MUTATING,  # not a storage error: a bug, a MemoryError
    "crash_name": NAME_OPS,  # the process dies at a create, rename or unlink
    "outage": MUTATING,  # from the N-th operation on, every write fails until the disk comes back
    "short_write": frozenset({"write"}),  # part of the bytes written, then ENOSPC
    "torn_crash": frozenset({"write"}),  # part of the bytes written, then the process dies
}
TORN = ("short_write", "torn_crash")
# Where a landed fault was, by the writer's (or uploader's) function on the stack.
PLACES = [
    "_abandon",
    "recover",
    "_make_state_durable",
    "_resume_journal",
    "_publish_pending",
    "_commit",
    "place_segments",
    "_write_snapshot",
    "discard_unfinished",
    "commit_open",
    "settle",
    "_release",
    "_upload_one",
    "_keep_aside",
]

STATS: collections.Counter[str] = collections.Counter()  # over the whole run, printed at the end


def _count(name: str, n: int = 1) -> None:
    STATS[name] += n


# -- the disk and the bucket, with faults ---------------------------------------------------------


@dataclass
class Armed:
    """A fault aimed at the `at`-th operation of `ops` from now."""

    kind: str
    at: int
    err: int = errno.EIO
    seen: int = 0
    fired: str | None = None  # the operation it landed at
    where: frozenset[str] = frozenset()

    def exception(self) -> BaseException:
        if self.kind == "runtime":
            return RuntimeError("injected: not a storage error")
        if self.kind in ("crash_name", "torn_crash"):
            return Crash()
        return OSError(self.err, os.strerror(self.err) + " (injected)")


class FaultDisk(PowerCutDisk):
    """PowerCutDisk (power cuts, Crash at the N-th write or sync) that can also fail its N-th
    operation of any kind with an OSError or another exception, die at a name operation, or
    have an outage. Every inode it has seen is kept open, so that the filesystem never reuses
    an inode number the double still keeps durable data or a name for."""

    def __init__(self, directory: Path) -> None:
        self._pins: dict[int, int] = {}
        self._fault_lock = threading.Lock()
        self.armed: Armed | None = None
        self.outage: int | None = None
        self.outage_hits = 0
        super().__init__(directory)
        self._pin_all()

    def _pin_all(self) -> None:
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                self._pin(entry.name)

    def _pin(self, name: str) -> None:
        try:
            fd = os.open(self.directory / name, os.O_PATH | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        ino = os.fstat(fd).st_ino
        if ino in self._pins:
            os.close(fd)
        else:
            self._pins[ino] = fd

    def release(self) -> None:
        for fd in self._pins.values():
            os.close(fd)
        self._pins.clear()

    def adopt(self, name: str) -> None:
        """Another program wrote this file and synced it and its directory entry: durable as it is
        now (nothing else becomes durable with it)."""
        self._pin(name)
        path = self.directory / name
        with self._lock:
            info = os.lstat(path)
            self._names[name] = info.st_ino
            self._data[info.st_ino] = path.read_bytes()
            self._modes[info.st_ino] = stat.S_IMODE(info.st_mode)

    def forget(self, name: str) -> None:
        """Another program removed this file and synced the directory."""
        with self._lock:
            self._names.pop(name, None)

    def power_cut(self) -> int:
        lost = super().power_cut()
        self._pin_all()
        return lost

    def _op(self, op: str) -> BaseException | None:
        """Count the operation; raise the fault aimed at it (a torn write's is returned: the
        write does part of its bytes first)."""
        error = None
        torn = False
        with self._fault_lock:
            armed = self.armed
            if armed is not None and op in FAULT_OPS[armed.kind]:
                armed.seen += 1
                if armed.seen == armed.at:
                    self.armed = None
                    armed.fired, armed.where = op, frozenset(_writer_frames())
                    if armed.kind == "outage":
                        self.outage = armed.err
                    error, torn = armed.exception(), armed.kind in TORN
            if error is None and self.outage is not None and op in MUTATING:
                self.outage_hits += 1
                error = OSError(self.outage, os.strerror(self.outage) + " (outage)")
        if torn:
            return error
        if error is not None:
            raise error
        return None

    # Every operation of LocalDisk, counted (and failed when a fault says so).
    def create(self, name):
        self._op("create")
        fd = super().create(name)
        self._pin(name)
        return fd

    def reopen(self, name, size):
        self._op("reopen")
        result = super().reopen(name, size)
        self._pin(name)
        return result

    def open_read(self, name):
        self._op("open_read")
        return super().open_read(name)

    def open_append(self, name):
        self._op("open_append")
        return super().open_append(name)

    def read_range(self, name, start, end):
        self._op("read_range")
        return super().read_range(name, start, end)

    def read_all(self, name):
        self._op("read_all")
        return super().read_all(name)

    def names(self):
        self._op("names")
        return super().names()

    def remove(self, name):
        self._op("remove")
        return super().remove(name)

    def replace(self, src_name, dst_name):
        self._op("replace")
        return super().replace(src_name, dst_name)

    def same_file(self, a, b):
        self._op("same_file")
        return super().same_file(a, b)

    def publish(self, src_name, dst_name):
        self._op("publish")
        return super().publish(src_name, dst_name)

    def write(self, fd, chunks, offset):
        torn = self._op("write")
        if torn is not None:
            data = b"".join(bytes(c) for c in chunks)
            LocalDisk.write(self, fd, [data[: len(data) // 2 + 1]], offset)  # ends mid-row (mid gzip member)
            raise torn
        return super().write(fd, chunks, offset)

    def sync_data(self, fd):
        self._op("sync_data")
        return super().sync_data(fd)

    def sync_directory(self):
        self._op("sync_directory")
        return super().sync_directory()

    def sync_filesystem(self):
        self._op("sync_filesystem")
        return super().sync_filesystem()


@dataclass(frozen=True)
class Obj:
    data: bytes
    sha256: str | None
    window_id: str | None
    encoding: str | None


class MemoryBucket:
    """What the uploader asks of a store (output/store.py's Store: create and identity), in
    memory: a create never replaces an object. Faults: the N-th call fails (StoreError), a PUT is
    stored but its answer lost, the process dies before or after a PUT is stored, an outage fails
    every call until it ends."""

    url = "mem://bucket/events/"

    def __init__(self, objects: dict[str, Obj] | None = None) -> None:
        self.objects: dict[str, Obj] = dict(objects or {})
        self._lock = threading.Lock()
        self.armed: Armed | None = None
        self.outage = False

    def copy(self) -> MemoryBucket:
        with self._lock:
            return MemoryBucket(self.objects)

    def _fault(self, call: str, stored: bool) -> None:
        """Called at the start of each call, and once a PUT's object is stored."""
        with self._lock:
            if self.outage and not stored:
                raise StoreError(f"{call}: the store is unreachable (outage)")
            armed = self.armed
            if armed is None or call not in {
                "head_fails": ("HeadObject",),
                "store_outage": ("PutObject", "HeadObject"),
            }.get(armed.kind, ("PutObject",)):
                return
            after = armed.kind in ("put_lost", "crash_after_put")  # aimed at the N-th PUT that creates an object
            if stored != after:
                return
            armed.seen += 1
            if armed.seen != armed.at:
                return
            self.armed = None
            armed.fired = call
            if armed.kind == "store_outage":
                self.outage = True
        if armed.kind.startswith("crash"):
            raise Crash
        raise StoreError(f"{call}: injected {armed.kind}")

    def create(self, name, window: Finished) -> bool:
        assert window.data is not None and window.content_type == "text/csv"
        self._fault("PutObject", stored=False)
        with self._lock:
            if name in self.objects:
                return False
            self.objects[name] = Obj(bytes(window.data), window.sha256, window.window_id, window.content_encoding)
        self._fault("PutObject", stored=True)
        return True

    def identity(self, name) -> Identity | None:
        self._fault("HeadObject", stored=False)
        with self._lock:
            obj = self.objects.get(name)
        return None if obj is None else Identity(len(obj.data), obj.sha256, obj.window_id)


class CountingReport:
    """An UploadReport that counts (no Prometheus registry per uploader)."""

    def __init__(self) -> None:
        self.results: collections.Counter[str] = collections.Counter()

    def uploaded(self, result: str, seconds: float) -> None:
        self.results[result] += 1

    def failed(self, stage: str = "upload") -> None:
        self.results[f"failed {stage}"] += 1

    def counted(self, windows: int, size: int, awaiting_release: int) -> None:
        pass


class LogCounter(logging.Handler):
    """Counts what the writer and uploader log, by the messages' fixed parts (not while a copy
    is recovered for a check)."""

    enabled = True

    PATTERNS = {
        "held by a file this server did not write": "window published under a -N name (a foreign file at its name)",
        "never acknowledged, rolling it back": "recovery rolled back a record whose rows were not there",
        "could not compact the journal": "start with the compaction failing",
        "complete but fails its checksum": "journal's last record complete but bad (kept aside)",
        "is not a regular file": "uploader left a non-regular file alone",
    }

    def emit(self, record: logging.LogRecord) -> None:
        if not self.enabled:
            return
        message = record.getMessage() if record.args else str(record.msg)
        for pattern, name in self.PATTERNS.items():
            if pattern in message:
                _count(f"log: {name}")


# -- copies of a directory ----------------------------------------------------------------------


def copy_dir(src: Path, dst: Path) -> None:
    """The directory as a crash leaves it (the page cache): regular files (hard links kept as
    links, permissions kept) and symlinks."""
    first: dict[int, Path] = {}
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_file(follow_symlinks=False):
            ino = entry.inode()
            if ino in first:
                os.link(first[ino], target)
            else:
                first[ino] = target
                shutil.copyfile(entry.path, target, follow_symlinks=False)
                os.chmod(target, stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))


def parse_window(name: str, data: bytes, header: bool) -> list[list[str]]:
    """A window file's records (AssertionError for a torn or foreign one)."""
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise AssertionError(f"{name} is not a whole gzip stream: {exc}") from None
    text = data.decode()
    assert text.endswith("\n"), f"{name} ends in a torn row: {text[-80:]!r}"
    if header:
        assert text.startswith(HEADER), f"{name} does not start with the header: {text[:80]!r}"
        text = text[len(HEADER) :]
        assert HEADER not in text, f"{name} holds the header twice"
    return list(csv.reader(io.StringIO(text, newline="")))


# -- the model ------------------------------------------------------------------------------------


@dataclass
class Send:
    """One request as sent: its rows by (uuid, id), and what is known of its outcome."""

    id: int
    key: str | None
    times: object  # what the writer got: a list, or the native pass's int64 view
    rows: Rows
    expected: dict[str, list[str]]  # id field -> the row's fields
    state: str = "pending"  # present | absent | doubt | refused (absent; in doubt at a power cut until settled)
    answer: str = ""

    @property
    def n(self) -> int:
        return len(self.expected)


@dataclass
class Planted:
    """Something another program put in the directory."""

    kind: str  # file | symlink
    content: bytes = b""  # a file's
    target: Path | None = None  # a symlink's
    may_vanish: bool = False  # at a part file's or .journal.tmp's name: the writer removes it
    landed: bool = False


@dataclass
class View:
    """What a crash or a power cut now would leave committed, once recovered."""

    counts: collections.Counter[tuple[int, str]] = field(default_factory=collections.Counter)
    keys: set[str] = field(default_factory=set)
    stems_taken: set[str] = field(default_factory=set)


def _scratch_root() -> str | None:
    """Where the directories go: a tmpfs when there is one (the disk double plays the syncs,
    and every step copies the directory twice: file creations on a busy disk would dominate)."""
    root = os.environ.get("BEA_FAULT_TMP")
    if root is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = "/dev/shm"
    return root


def _examples() -> int:
    return int(os.environ.get("BEA_FAULT_EXAMPLES", "60"))


def _steps() -> int:
    return int(os.environ.get("BEA_FAULT_STEPS", "40"))


FAULT_KINDS = ["none", "none", "eio", "enospc", "runtime", "crash", "crash_name", "outage", "short_write", "torn_crash"]
ERRORS = ["eio", "enospc", "runtime", "outage", "short_write"]
START_FAULTS = ["none", "none", "eio", "enospc", "short_write", "runtime", "crash"]
CRASHES = ["crash", "crash", "crash_name", "torn_crash"]
AT_MOST = {
    "none": 1,
    "eio": 12,
    "enospc": 8,
    "runtime": 12,
    "outage": 8,
    "crash": 8,
    "crash_name": 3,
    "short_write": 4,
    "torn_crash": 4,
}
STORE_FAULTS = [
    "none",
    "none",
    "put_fails",
    "put_lost",
    "head_fails",
    "crash_before_put",
    "crash_after_put",
    "store_outage",
    "disk_eio",
    "disk_crash",
]


class FaultModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="bea-fault-", dir=_scratch_root()))
        self.dir = self.base / "out"
        self.dir.mkdir(mode=0o700)
        self.outside = self.base / "outside"
        self.outside.mkdir()
        self.scratch = self.base / "views"
        self.scratch.mkdir()
        self._umask = os.umask(0o022)
        self.disk = FaultDisk(self.dir)
        self.writer: Writer | None = None
        self.uploader: Uploader | None = None
        self.bucket: MemoryBucket | None = None
        self.report = CountingReport()
        self.now = 1_750_000_000.0  # the writer's wall clock (keys' retention)
        self.sends: dict[int, Send] = {}
        self.key_sends: dict[str, list[int]] = {}
        self.loose_before = 0  # keys first sent before this send id may have expired
        self.unsettled: set[int] = set()  # refused sends whose rollback may not be durable yet
        self.planted: dict[str, Planted] = {}
        self.targets: dict[Path, bytes] = {}
        self.cursor = T0
        self.next_id = 0
        self.finished: dict[str, bytes] = {}  # our finished files seen, by name: never change
        self.many_windows_done = False
        self.log = LogCounter()
        self._loggers = []
        for name in ("batched_event_api.commit.writer", "batched_event_api.output.uploader"):
            logger = logging.getLogger(name)
            self._loggers.append((logger, logger.level, logger.propagate))
            logger.addHandler(self.log)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # thousands of expected errors: counted, not captured

    # -- set-up -------------------------------------------------------------------------------

    @initialize(
        compress=st.booleans(),
        aligned=st.booleans(),
        strict=st.booleans(),
        max_file_bytes=st.sampled_from([None, None, 400]),
        header=st.booleans(),
        bucket=st.booleans(),
        syncfs_from=st.sampled_from([None, 3, 8]),
        compact_bytes=st.sampled_from([COMPACT_BYTES, 700]),
        key_memory=st.sampled_from([256 << 20, 1500]),
        group_readable=st.booleans(),
    )
    def configure(
        self,
        compress,
        aligned,
        strict,
        max_file_bytes,
        header,
        bucket,
        syncfs_from,
        compact_bytes,
        key_memory,
        group_readable,
    ):
        # Strict windows (--align interval): several open at once, at most 3 here, so that the cap
        # commits windows too.
        self.policy = StrictWindows(INTERVAL, max_open=3) if strict else WindowPolicy(INTERVAL, aligned=aligned)
        self.compress, self.header = compress, header
        self.suffix = ".csv.gz" if compress else ".csv"
        self.file_mode = GROUP_FILE_MODE if group_readable else FILE_MODE
        self.options = dict(
            compress=Compress.GZIP if compress else Compress.NONE,
            header=HEADER if header else "",
            key_retention=KEY_RETENTION,
            key_memory=key_memory,
            window_ids=bucket,
            file_mode=self.file_mode,
            clock=lambda: self.now,
            max_file_bytes=max_file_bytes,
        )
        self.syncfs_from, self.compact_bytes = syncfs_from, compact_bytes
        if bucket:
            self.bucket = MemoryBucket()
        note(
            f"config: compress={compress} aligned={aligned} strict={strict} max_file_bytes={max_file_bytes} "
            f"header={header} bucket={bucket} "
            f"syncfs_from={syncfs_from} compact_bytes={compact_bytes} key_memory={key_memory} "
            f"file_mode={self.file_mode:o}"
        )
        event(f"config: {'bucket' if bucket else 'local'}{' gzip' if compress else ''}")
        self.start()

    def teardown(self) -> None:
        _count("examples (sequences run)")
        try:
            self.die_quietly()
        finally:
            for logger, level, propagate in self._loggers:
                logger.removeHandler(self.log)
                logger.setLevel(level)
                logger.propagate = propagate
            for result, n in self.report.results.items():
                _count(f"uploads: {result}", n)
            self.disk.release()
            os.umask(self._umask)
            shutil.rmtree(self.base, ignore_errors=True)

    # -- the process --------------------------------------------------------------------------

    def new_writer(self) -> Writer:
        return Writer(
            self.dir,
            self.policy,
            disk=self.disk,
            syncfs_from=self.syncfs_from,
            compact_bytes=self.compact_bytes,
            **self.options,
        )

    def start(self, fault: str = "none", at: int = 1) -> None:
        """Start the server on the directory (after a crash, a power cut or a clean stop), with a
        fault aimed at its recovery; a start that fails is retried (without), as an operator would."""
        failures = []
        for attempt in range(8):
            self.disk.outage = None  # the disk was fixed before the restart
            writer = self.new_writer()
            armed = self.arm(fault, at, "start") if attempt == 0 else None
            try:
                writer.start()
            except Crash:
                writer.close()
                self.disarm(armed)
                _count("start: died during recovery")
                self.check_crashed()
                continue
            except Exception as exc:  # noqa: BLE001 - a storage or other error of recovery
                writer.close()
                self.disarm(armed)
                assert type(exc).__name__ != "JournalDamaged", f"the journal is damaged: {exc}"
                _count(f"start: failed ({type(exc).__name__})")
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            self.disarm(armed)
            break
        else:
            raise AssertionError(
                f"the server did not start in 8 attempts: {failures}; the directory: {sorted(os.listdir(self.dir))}"
            )
        self.writer = writer
        if self.bucket is not None:
            self.uploader = Uploader(
                self.dir,
                self.bucket,
                self.report,
                concurrency=1,  # type: ignore[arg-type]
                pinned=lambda: writer.pinned,
                disk=self.disk,
            )
        # Recovery has decided every request a crash left in doubt: durably (with fsync on).
        doubt = [s for s in self.sends.values() if s.state == "doubt"]
        if doubt:
            view = self.check_view(durable=False)
            for s in doubt:
                present = view.counts[(s.id, "0")] == 1
                s.state = "present" if present else "absent"
                what = "refused during a disk outage, then a power cut" if s.answer else "a crash hit their round"
                _count(f"requests in doubt ({what}): {'kept' if present else 'rolled back'} by recovery")
        self.settle_refused()

    def die(self, *, power_cut: bool) -> None:
        """The process is gone (SIGKILL, or the machine's power): no close, no final commit; its
        descriptors go. Then maybe the power; then the checks of the state left; then a restart."""
        self.die_quietly()
        if power_cut:
            lost = self.disk.power_cut()
            _count("power cuts that dropped unsynced data" if lost else "power cuts with nothing unsynced")
            self.finished.clear()  # an unsynced publish may be undone, and the window's name go to another
            for name, planted in list(self.planted.items()):
                if planted.kind == "symlink" and not os.path.islink(self.dir / name):
                    del self.planted[name]  # made after the name's last durable state: gone with the power
                    _count("foreign symlinks gone with the power (a durable file of ours came back at the name)")
            for s in self.sends.values():
                if s.state == "refused" and s.id in self.unsettled:
                    s.state = "doubt"  # its rollback may not be durable: the disk failed it too
            self.unsettled.clear()
        self.check_crashed()

    def die_quietly(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None
        self.disk.crash_at = None
        self.disk.armed = None

    def check_crashed(self) -> None:
        """A crash or power cut just happened: what a restart finds must hold every request
        answered, nothing refused, and each request in doubt whole or not at all."""
        self.check_view(durable=False)
        self.check_view(durable=True)

    # -- faults -------------------------------------------------------------------------------

    def arm(self, fault: str, at: int, phase: str, err: int = errno.EIO) -> Armed | None:
        if fault == "none":
            return None
        _count(f"injected {fault}")
        _count(f"injected {fault} in {phase}")
        if fault == "crash":  # PowerCutDisk's own: the at-th write or sync from now
            self.disk.crash_at = self.disk.calls + at
            self._crashes = self.disk.crashes
            self._landed = collections.Counter(self.disk.landed)
            return Armed("crash", at)
        if fault in ("enospc", "outage", "short_write"):  # an outage: a full disk, until space returns
            err = errno.ENOSPC
        armed = Armed(fault, at, err)
        self.disk.armed = armed
        return armed

    def disarm(self, armed: Armed | None) -> bool:
        """Take the fault back if it has not fired; count it as landed if it did."""
        if armed is None:
            return False
        if armed.kind == "crash":
            landed = self.disk.crashes > self._crashes
            self.disk.crash_at = None
            where = set(self.disk.landed - self._landed) or {"an I/O thread"}
        else:
            landed = armed.fired is not None
            self.disk.armed = None
            where = set(armed.where)
        if landed:
            _count(f"landed {armed.kind}")
            places = [p for p in PLACES if p in where] or sorted(where)[:1] or ["an I/O thread"]
            _count(f"landed {armed.kind} in {places[0]}" + (f" at {armed.fired}" if armed.fired else ""))
        else:
            _count(f"not reached {armed.kind}")
        event(f"{armed.kind}: {'landed' if landed else 'not reached'}")
        return landed

    def draw_fault(self, data, kinds: list[str] = FAULT_KINDS) -> tuple[str, int, bool]:
        fault = data.draw(st.sampled_from(kinds), label="fault")
        at = data.draw(st.integers(1, AT_MOST[fault]), label="at") if fault != "none" else 1
        power_cut = data.draw(st.booleans(), label="power cut") if "crash" in fault else False
        return fault, at, power_cut

    def settle_refused(self) -> None:
        """A healthy writer has recovered since: refused rounds are durably undone."""
        if self.writer is not None and self.writer.healthy:
            self.unsettled.clear()

    # -- requests -----------------------------------------------------------------------------

    def draw_times(self, data, n: int) -> list[int]:
        where = data.draw(
            st.sampled_from(["continue", "continue", "continue", "anchor", "random", "beyond"]), label="where"
        )
        if where == "anchor":
            self.cursor = data.draw(st.sampled_from(IN_RANGE), label="anchor")
        elif where == "random":
            self.cursor = data.draw(st.integers(EARLIEST_NS, LATEST_NS - 1), label="time")
        elif where == "beyond":
            self.cursor = data.draw(st.sampled_from(BEYOND), label="beyond")
        times = []
        for step in data.draw(st.lists(st.sampled_from(STEPS), min_size=n, max_size=n), label="steps"):
            self.cursor += step
            times.append(self.cursor)
        return times

    def new_send(self, key: str | None, times: list[int], native: bool, descriptions: list[str]) -> Send:
        sid = self.next_id
        self.next_id += 1
        uuid = f"s{sid}"
        if native and all(EARLIEST_NS <= t < LATEST_NS for t in times):  # through transcode() and the native pass
            rng = random.Random(sid)
            events = [
                {
                    "time": time_text(t, rng),
                    "uuid": uuid,
                    "id": i,
                    "active": i % 2 == 0,
                    "description": descriptions[i % len(descriptions)],
                    "credits": i / 4,
                }
                for i, t in enumerate(times)
            ]
            prepared = transcode(ndjson(events), max_line=1 << 20)
            seq, rows = prepared.times, prepared.rows
        else:  # a list of ints: the Python window scan
            lines = [
                csv_line([str(t), uuid, str(i), "true", "", "", descriptions[i % len(descriptions)], "0"])
                for i, t in enumerate(times)
            ]
            seq, rows = list(times), Rows.from_lines(lines)
        expected = {}
        for i in range(len(rows)):
            [record] = list(csv.reader(io.StringIO(b"".join(rows.chunks(i, i + 1)).decode(), newline="")))
            assert record[1] == uuid and record[2] == str(i)
            expected[str(i)] = record
        send = Send(sid, key, seq, rows, expected)
        self.sends[sid] = send
        if key is not None:
            self.key_sends.setdefault(key, []).append(sid)
        return send

    def draw_send(self, data) -> Send:
        kind = data.draw(st.sampled_from(["unkeyed", "keyed", "keyed", "resend"]), label="request")
        descriptions = data.draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3), label="descriptions")
        native = data.draw(st.booleans(), label="native")
        if kind == "resend" and self.key_sends:
            key = data.draw(st.sampled_from(sorted(self.key_sends)), label="resent key")
            first = self.sends[self.key_sends[key][0]]
            return self.new_send(key, list(first.times), native, descriptions)  # the same events, new tags
        n = data.draw(st.integers(1, 5), label="events")
        times = self.draw_times(data, n)
        return self.new_send(f"k{self.next_id}" if kind != "unkeyed" else None, times, native, descriptions)

    def strict(self, key: str) -> bool:
        """Is this key certainly within its retention (sent after the last jump of the clock)?"""
        return self.key_sends[key][0] >= self.loose_before

    def key_committed(self, key: str) -> Send | None:
        present = [self.sends[i] for i in self.key_sends[key] if self.sends[i].state == "present"]
        return present[0] if present else None

    def apply(self, sends: list[Send]) -> None:
        """One round; its outcome into the model. Crash goes to the caller."""
        assert self.writer is not None
        for s in sends:
            s.state = "doubt"  # until the answer
        try:
            results = self.writer.apply_group([Request(Batch(s.times, s.rows), s.key) for s in sends])
        except Exception as exc:  # noqa: BLE001 - a storage error (503) or any other (500): all refused
            for s in sends:
                s.state, s.answer = "refused", type(exc).__name__
                self.unsettled.add(s.id)
            _count(f"rounds refused ({type(exc).__name__})")
            return
        assert len(results) == len(sends)
        for s, applied in zip(sends, results):
            committed = self.key_committed(s.key) if s.key is not None else None
            strict = s.key is not None and self.strict(s.key)
            if applied.keys_full is not None:
                assert s.key is not None and applied.accepted == 0 and not applied.replay
                assert not (strict and committed), f"{s.key} was applied, yet a resend is refused for a full key store"
                s.state, s.answer = "absent", "keys_full"
                _count("requests answered keys_full")
            elif applied.replay:
                assert s.key is not None, "a request without a key answered as a replay"
                if strict:
                    assert committed is not None, (
                        f"a resend of {s.key} answered as a replay, but no request of that key is committed"
                    )
                    assert applied.accepted == committed.n
                s.state, s.answer = "absent", "replay"
                _count("requests answered as replays")
            else:
                assert applied.accepted == s.n
                assert not (strict and committed), f"{s.key} was applied already, and a resend was written again"
                s.state, s.answer = "present", "applied"
                _count("requests applied")

    def guarded(self, data, fault: tuple[str, int, bool], phase: str, action) -> None:
        """Run `action` with the fault armed; a crash kills the process (and maybe the power),
        and the restart may meet a fault of its own (a full disk, say)."""
        kind, at, power_cut = fault
        armed = self.arm(kind, at, phase)
        try:
            action()
        except Crash:
            self.disarm(armed)
            self.die(power_cut=power_cut)
            self.start(*self.draw_fault(data, START_FAULTS)[:2])
            return
        self.disarm(armed)
        self.settle_refused()

    # -- rules --------------------------------------------------------------------------------

    @rule(data=st.data(), size=st.integers(1, 3))
    def send_round(self, data, size):
        """A round of 1-3 requests (keyed, unkeyed, resent) through apply_group."""
        self.round(data, size, ("none", 1, False))

    @rule(data=st.data(), size=st.integers(1, 3))
    def round_with_storage_error(self, data, size):
        """A round with an OSError (EIO, ENOSPC), an outage, or an error that is not a storage
        error, at its N-th disk operation."""
        self.round(data, size, self.draw_fault(data, ERRORS))

    @rule(data=st.data(), size=st.integers(1, 3))
    def round_with_crash(self, data, size):
        """A round the process dies in (at its N-th write or sync, or name operation), the
        power maybe with it; then a restart."""
        self.round(data, size, self.draw_fault(data, CRASHES))

    def round(self, data, size: int, fault: tuple[str, int, bool]) -> None:
        sends = [self.draw_send(data) for _ in range(size)]
        self.now += 1
        self.guarded(data, fault, "round", lambda: self.apply(sends))

    @precondition(lambda self: not self.many_windows_done)
    @rule(data=st.data())
    def many_windows(self, data):
        """One request opening 260 windows: part files written, synced and closed in batches."""
        self.many_windows_done = True
        start = self.cursor + INTERVAL
        times = [start + w * 2 * INTERVAL + (w % 7) for w in range(260)]
        self.cursor = times[-1]
        send = self.new_send(f"k{self.next_id}", times, data.draw(st.booleans(), label="native"), ["m"])
        self.guarded(data, self.draw_fault(data), "round", lambda: self.apply([send]))

    @rule(data=st.data())
    def idle_commit(self, data):
        """The idle timer (or shutdown) commits the open window, as the app does."""
        assert self.writer is not None
        writer = self.writer

        def commit():
            try:
                writer.commit_open()
                if self.bucket is not None:  # no more rounds may come: nothing stays pinned
                    writer.settle()
            except Exception as exc:  # noqa: BLE001
                _count(f"idle commits failed ({type(exc).__name__})")
            if not writer.healthy:
                try:
                    writer.heal()
                except Exception as exc:  # noqa: BLE001
                    _count(f"heals failed ({type(exc).__name__})")

        self.guarded(data, self.draw_fault(data), "idle commit", commit)

    @rule(data=st.data())
    def heal(self, data):
        assert self.writer is not None
        writer = self.writer

        def heal():
            try:
                _count(f"heal: {'healthy' if writer.heal() else 'still broken'}")
            except Exception as exc:  # noqa: BLE001
                _count(f"heals failed ({type(exc).__name__})")

        self.guarded(data, self.draw_fault(data), "heal", heal)

    @rule(shutdown=st.booleans(), data=st.data())
    def restart(self, shutdown, data):
        """A clean stop (with or without the final commit) and a start, maybe with a fault in its recovery."""
        assert self.writer is not None
        if shutdown:
            try:
                self.writer.commit_open()
                if self.bucket is not None:
                    self.writer.settle()
            except Exception as exc:  # noqa: BLE001
                _count(f"final commits failed ({type(exc).__name__})")
        self.die_quietly()
        fault, at, _ = self.draw_fault(data)
        self.start(fault, at)

    @rule()
    def power_cut(self):
        """The power goes between two rounds: every answered request must survive."""
        self.die(power_cut=True)
        self.start()

    @precondition(lambda self: self.disk.outage is not None)
    @rule()
    def storage_comes_back(self):
        _count("outages ended")
        self.disk.outage = None

    @precondition(lambda self: self.loose_before == 0)
    @rule()
    def keys_expire(self):
        """The wall clock jumps past the keys' retention: every key sent so far may be forgotten."""
        self.now += KEY_RETENTION + 1
        self.loose_before = self.next_id

    @rule(data=st.data())
    def foreign(self, data):
        """Another program puts a file or a symlink in the directory, writes to its file, or removes it."""
        local = self.bucket is None
        choices = [
            "symlink at a window's name",
            "file at .journal.tmp",
            "symlink at .journal.tmp",
            "other file",
            "append",
            "remove",
        ]
        if local:
            choices += [
                "file at a window's name",
                "file at the open window's name",
                "file at a part file's name",
                "symlink at a part file's name",
            ]
        what = data.draw(st.sampled_from(choices), label="foreign")
        step = data.draw(st.sampled_from([0, INTERVAL, 2 * INTERVAL + 7, 7 * INTERVAL]), label="ahead")
        final = f"user-events-{utc_stamp(self.policy.start_for(self.cursor + step))}{self.suffix}"
        if what == "append" or what == "remove":
            files = sorted(n for n, p in self.planted.items() if p.kind == "file" and not p.may_vanish)
            if not files:
                return
            name = data.draw(st.sampled_from(files), label="file")
            if what == "append":
                self.planted[name].content += b"more,from,the,other,program\n"
                (self.dir / name).write_bytes(self.planted[name].content)
                self.disk.adopt(name)
            else:
                os.unlink(self.dir / name)
                self.disk.forget(name)
                del self.planted[name]
            _count(f"foreign program: {what}")
            return
        if what == "file at the open window's name":
            if self.writer is None or self.writer.open is None:
                return
            final = self.writer.open.name
        name = {
            "file at .journal.tmp": ".journal.tmp",
            "symlink at .journal.tmp": ".journal.tmp",
            "other file": f"report-{self.next_id}.csv",
            "file at a part file's name": part_name(final),
            "symlink at a part file's name": part_name(final),
        }.get(what, final)
        if os.path.lexists(self.dir / name):
            return
        if what == "file at a part file's name" and any(
            (finished_stem(n) or ("",))[0] == finished_stem(final)[0] for n in os.listdir(self.dir)
        ):  # type: ignore[index]
            # Known, not fixed (tests/test_fault_regressions.py, xfail): a regular file at the part
            # name of a window already published is taken for the window's own by recovery.
            _count("foreign file at a published window's part name: not planted (known bug)")
            return
        _count(f"injected foreign {what}")
        may_vanish = name == ".journal.tmp" or name.endswith(PART_SUFFIX)
        if what.startswith("symlink"):
            target = self.outside / f"target-{len(self.targets)}"
            target.write_bytes(b"PRECIOUS %d\n" % len(self.targets))
            self.targets[target] = target.read_bytes()
            os.symlink(target, self.dir / name)
            self.planted[name] = Planted("symlink", target=target, may_vanish=may_vanish)
        else:
            content = FOREIGN + b"%s\nnot,ours\n" % name.encode()
            (self.dir / name).write_bytes(content)
            os.chmod(self.dir / name, 0o644)
            self.disk.adopt(name)
            self.planted[name] = Planted("file", content=content, may_vanish=may_vanish)

    # -- the uploader -------------------------------------------------------------------------

    @precondition(lambda self: self.bucket is not None)
    @rule(data=st.data())
    def upload(self, data):
        """One turn of the uploader's loop, maybe with a fault of the store or of the disk."""
        assert self.uploader is not None and self.bucket is not None
        uploaded = set(self.uploader._uploaded)  # kept while pinned: no PUT for them
        waiting = [
            e.name
            for e in os.scandir(self.dir)
            if finished_stem(e.name) and e.is_file(follow_symlinks=False) and e.name not in uploaded
        ]
        # A fault only where there is something to upload (else it could not land).
        fault = data.draw(st.sampled_from(STORE_FAULTS), label="store fault") if waiting else "none"
        at = data.draw(st.integers(1, min(len(waiting), 3)), label="at") if fault != "none" else 1
        power_cut = data.draw(st.booleans(), label="power cut") if "crash" in fault else False
        armed = store = None
        if fault.startswith("disk_"):
            armed = self.arm("eio" if fault == "disk_eio" else "crash_name", at, "upload")
        elif fault != "none":
            _count(f"injected {fault}")
            store = self.bucket.armed = Armed(fault, at)
        uploader = self.uploader
        try:
            names = uploader.turn()
            _count("upload turns " + ("failed" if names is None else "done"))
        except Crash:
            self.disarm(armed)
            self.store_disarm(store)
            self.die(power_cut=power_cut)
            self.start(*self.draw_fault(data, START_FAULTS)[:2])
            return
        self.disarm(armed)
        self.store_disarm(store)

    def store_disarm(self, armed: Armed | None) -> None:
        assert self.bucket is not None
        self.bucket.armed = None
        if armed is None:
            return
        landed = armed.fired is not None
        _count(f"{'landed' if landed else 'not reached'} {armed.kind}")
        event(f"{armed.kind}: {'landed' if landed else 'not reached'}")

    @precondition(lambda self: self.bucket is not None and self.bucket.outage)
    @rule()
    def store_comes_back(self):
        assert self.bucket is not None
        self.bucket.outage = False
        _count("store outages ended")

    @precondition(lambda self: self.bucket is not None)
    @rule(data=st.data())
    def foreign_object(self, data):
        """Another instance's window in the bucket, at a name ours may want."""
        assert self.bucket is not None
        step = data.draw(st.sampled_from([0, INTERVAL, 7 * INTERVAL]), label="ahead")
        name = f"user-events-{utc_stamp(self.policy.start_for(self.cursor + step))}{self.suffix}"
        if name in self.bucket.objects:
            return
        body = FOREIGN + b"object %s\n" % name.encode()
        self.bucket.objects[name] = Obj(body, hashlib.sha256(body).hexdigest(), "f" * 16, None)
        _count("foreign: object in the bucket")

    # -- the invariant ------------------------------------------------------------------------

    @invariant()
    def committed_equals_the_model(self):
        _count("steps (each followed by the checks)")
        self.check_live()
        for durable in (False, True):
            self.check_view(durable=durable)

    def check_live(self) -> None:
        """The directory as it is: foreign things untouched, symlinks not followed, files of ours
        private, finished windows never changed, no part file left behind by a healthy writer."""
        for target, content in self.targets.items():
            assert target.read_bytes() == content, f"{target} was written through a symlink"
        for name, planted in list(self.planted.items()):
            if planted.landed and planted.may_vanish:
                continue
            path = self.dir / name
            if planted.kind == "symlink":
                ok = path.is_symlink() and Path(os.readlink(path)) == planted.target
            else:
                ok = path.is_file() and not path.is_symlink() and path.read_bytes()[: len(FOREIGN)] == FOREIGN
                if ok:
                    assert path.read_bytes() == planted.content, f"the foreign file {name} was changed"
            if not ok and not planted.landed:
                assert planted.may_vanish, f"the foreign {planted.kind} {name} was removed or replaced"
                planted.landed = True  # kept: a power cut may bring a foreign file back
                _count(
                    f"landed foreign {planted.kind} at {'.journal.tmp' if name == '.journal.tmp' else 'a part name'}: "
                    "replaced by the writer's own file"
                )
        ours_in_progress = set()
        for entry in os.scandir(self.dir):
            if not entry.is_file(follow_symlinks=False):
                continue
            data = Path(entry.path).read_bytes()
            if data.startswith(FOREIGN):
                continue
            mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            assert mode & ~self.file_mode == 0, f"{entry.name} has mode {mode:o}"
            if entry.name.endswith(PART_SUFFIX):
                ours_in_progress.add(entry.name)
            elif finished_stem(entry.name):
                seen = self.finished.setdefault(entry.name, data)
                assert seen == data, f"the finished window {entry.name} changed"
        if self.writer is not None and self.writer.healthy:
            expected = {part_name(w.name) for w in self.writer.windows.values()}
            assert ours_in_progress == expected, f"part files {ours_in_progress}, the journal names {expected}"
        if self.bucket is not None:
            for name, obj in self.bucket.objects.items():
                if obj.data.startswith(FOREIGN):
                    assert obj.data == FOREIGN + b"object %s\n" % name.encode()

    def view(self, *, durable: bool) -> View:
        """Recover a copy of the directory as a crash (page cache) or a power cut (what is durable)
        would leave it, commit its open window, upload what it holds into a copy of the bucket;
        return the rows there and the keys it remembers."""
        dst = Path(tempfile.mkdtemp(dir=self.scratch))
        self.log.enabled = False
        try:
            if durable:
                for entry in os.scandir(self.dir):
                    if entry.is_symlink():
                        os.symlink(os.readlink(entry.path), dst / entry.name)
                self.disk.write_durable(dst)
            else:
                copy_dir(self.dir, dst)
            bucket = self.bucket.copy() if self.bucket is not None else None
            what = "a power cut" if durable else "a crash"
            writer = Writer(dst, self.policy, fsync=False, **self.options)
            try:
                writer.start()
            except Exception as exc:
                raise AssertionError(
                    f"after {what} now, the server would not start: {type(exc).__name__}: {exc}"
                ) from exc
            view = View(keys=set(writer.keys))
            writer.commit_open()
            if bucket is not None:
                writer.settle()
                uploader = Uploader(
                    dst,
                    bucket,
                    CountingReport(),
                    concurrency=1,  # type: ignore[arg-type]
                    pinned=lambda: writer.pinned,
                )
                for _ in range(4):
                    if uploader.turn() == [] and not uploader.awaiting_release:
                        break
                else:
                    raise AssertionError("the uploader did not empty a healthy state directory")
                uploader.stop()
            assert writer.healthy and not writer.windows
            writer.close()
            self.read_view(dst, bucket, view, what)
            return view
        finally:
            self.log.enabled = True
            shutil.rmtree(dst, ignore_errors=True)

    def read_view(self, dst: Path, bucket: MemoryBucket | None, view: View, what: str) -> None:
        windows: dict[str, bytes] = {}
        for entry in os.scandir(dst):
            name = entry.name
            planted = self.planted.get(name)
            if entry.is_symlink():
                assert planted is not None and planted.kind == "symlink", f"a symlink {name} after {what}"
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            data = Path(entry.path).read_bytes()
            if data.startswith(FOREIGN):
                assert planted is not None and data == planted.content, f"the foreign file {name} changed after {what}"
                continue
            assert not name.endswith(PART_SUFFIX), f"{name} left after recovery and a final commit ({what})"
            if finished_stem(name):
                assert bucket is None, f"{name} stayed in the state directory after its upload ({what})"
                windows[name] = data
        if bucket is not None:
            ids = collections.Counter()
            for name, obj in bucket.objects.items():
                if obj.data.startswith(FOREIGN):
                    continue
                assert window_id(name) is None and obj.window_id is not None, name
                assert obj.encoding == ("gzip" if name.endswith(".gz") else None)
                ids[obj.window_id] += 1
                windows[name] = obj.data
            twice = [i for i, n in ids.items() if n > 1]
            assert not twice, f"windows uploaded twice after {what}: {twice}"
        for name, data in windows.items():
            stem = finished_stem(name)
            view.stems_taken.add(stem[0])  # type: ignore[index]
            last: dict[int, int] = {}
            for record in parse_window(name, data, self.header):
                assert len(record) == len(COLUMNS), f"a torn or foreign row in {name} after {what}: {record!r}"
                uuid, index = record[1], record[2]
                sid = int(uuid[1:]) if uuid.startswith("s") and uuid[1:].isdigit() else -1
                send = self.sends.get(sid)
                assert send is not None and send.expected.get(index) == record, (
                    f"a row of no request, or changed, in {name} after {what}: {record!r}"
                )
                assert last.get(sid, -1) < int(index), f"{name}: the rows of request {sid} out of order"
                last[sid] = int(index)
                view.counts[(sid, index)] += 1

    def check_view(self, *, durable: bool) -> View:
        view = self.view(durable=durable)
        what = "a power cut" if durable else "a crash"
        for s in self.sends.values():
            counts = [view.counts[(s.id, str(i))] for i in range(s.n)]
            assert max(counts, default=0) <= 1, f"request {s.id} ({s.answer}) has rows twice after {what}"
            present = bool(counts) and min(counts) == 1
            assert present or max(counts, default=0) == 0, f"request {s.id} is there in part after {what}: {counts}"
            state = s.state
            if state == "refused":
                state = "doubt" if durable and s.id in self.unsettled else "absent"
            if state == "present":
                assert present, f"request {s.id} was answered (applied) but is lost after {what}"
            elif state == "absent":
                assert not present, f"request {s.id} ({s.answer}) was not applied, but is there after {what}"
        for name, planted in self.planted.items():
            stem = finished_stem(name)
            if stem and not planted.landed and not planted.may_vanish and stem[0] in view.stems_taken:
                taken = [n for n in os.listdir(self.dir) if finished_stem(n) and finished_stem(n)[0] == stem[0]]
                if len(taken) > 1 or self.bucket is not None:
                    planted.landed = True
                    _count(f"landed foreign {planted.kind} at a window's name: the window took another")
        for key, ids in self.key_sends.items():
            if not self.strict(key):
                continue
            there = [i for i in ids if view.counts[(i, "0")] == 1]
            assert len(there) <= 1, f"requests {there} of one key {key} are all there after {what}"
            assert (key in view.keys) == bool(there), (
                f"after {what} the key {key} is {'' if key in view.keys else 'not '}remembered, "
                f"and its request's rows are {'' if there else 'not '}there"
            )
        return view


if os.environ.get("BEA_FAULT_SEED"):  # explore new sequences from this seed (and see them again)
    FaultModel = seed(int(os.environ["BEA_FAULT_SEED"]))(FaultModel)
FaultModel.TestCase.settings = settings(
    max_examples=_examples(),
    stateful_step_count=_steps(),
    derandomize=os.environ.get("BEA_FAULT_RANDOM") != "1" and not os.environ.get("BEA_FAULT_SEED"),
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    # BEA_FAULT_NO_SHRINK=1: report the first failing sequence as found (faster while debugging).
    phases=[p for p in Phase if p != Phase.shrink or os.environ.get("BEA_FAULT_NO_SHRINK") != "1"],
)
TestFaultModel = FaultModel.TestCase


def summary_lines(stats: collections.Counter[str]) -> list[str]:
    """Faults by kind (injected, landed where aimed, not reached; where they landed), then the
    other counts."""
    kinds = sorted({name.split()[1] for name in stats if name.startswith("injected ") and len(name.split()) == 2})
    lines = [
        f"  {'fault':<28}{'injected':>9}{'landed':>8}{'not reached':>12}  landed in (the writer's function, at the operation)"
    ]
    for kind in kinds:
        places = sorted(
            (
                (n, name.removeprefix(f"landed {kind} in "))
                for name, n in stats.items()
                if name.startswith(f"landed {kind} in ")
            ),
            reverse=True,
        )
        lines.append(
            f"  {kind:<28}{stats[f'injected {kind}']:>9}{stats[f'landed {kind}']:>8}"
            f"{stats[f'not reached {kind}']:>12}  "
            + ", ".join(f"{place} {n}" for n, place in places[:6])
            + (", ..." if len(places) > 6 else "")
        )
    fault_names = {f"{what} {kind}" for kind in kinds for what in ("injected", "landed", "not reached")}
    others = [
        name
        for name in sorted(stats)
        if name not in fault_names
        and not any(name.startswith(f"{what} {kind} in ") for kind in kinds for what in ("injected", "landed"))
    ]
    lines += [f"  {stats[name]:6d}  {name}" for name in others]
    return lines


@pytest.fixture(scope="module", autouse=True)
def fault_summary(request):
    """Print what was injected and where it landed, after the module's tests."""
    STATS.clear()
    started = time.monotonic()
    yield
    lines = [
        "",
        f"fault model: {STATS['examples (sequences run)']} sequences, "
        f"{STATS['steps (each followed by the checks)']} steps, {time.monotonic() - started:.0f} s",
    ]
    lines += summary_lines(STATS)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)
