"""Attacks on strict windows (`--align interval`) and --max-file-bytes, in-process: power cuts at
every step of rounds that touch several windows, close some by the watermark and the cap, roll
files and publish; restarts that change the policy; events at the edges of the accepted range."""

from __future__ import annotations

import errno
import gzip
import io
import os
import random

import pytest
import zstandard

from batched_event_api.commit.disk import LocalDisk
from batched_event_api.commit.journal import Journal
from batched_event_api.commit.windows import StrictWindows, WindowPolicy
from batched_event_api.commit.writer import Request, Writer
from batched_event_api.config import Compress
from batched_event_api.errors import StorageError
from batched_event_api.events.rows import Rows
from batched_event_api.events.timestamps import EARLIEST_NS, LATEST_NS, MAX_INTERVAL_NS, utc_stamp
from batched_event_api.events.transcode import Batch
from model import INTERVAL, MINUTE, SECOND
from powercut import PowerCutDisk
from snapshots import csv_files
from strict_model import StrictModel
from writer_setup import T0, Crash

BASE = T0 - T0 % INTERVAL
POLICY = StrictWindows(INTERVAL, lateness=INTERVAL, max_open=3)
MAX_FILE_BYTES = 120


def _request(rng: random.Random, tag: int) -> tuple[list[int], Rows]:
    """A few events over six windows, some far behind the watermark (late files)."""
    times = [BASE + rng.randrange(6 * INTERVAL) for _ in range(rng.randint(1, 8))]
    return times, Rows.from_lines([f"r{tag}-{i},{t}" for i, t in enumerate(times)])


def _model_rows(times: list[int], tag: int) -> list[tuple[int, bytes]]:
    return [(t, f"r{tag}-{i},{t}\n".encode()) for i, t in enumerate(times)]


def _started(directory, disk) -> Writer:
    writer = Writer(directory, POLICY, disk=disk, max_file_bytes=MAX_FILE_BYTES)
    try:
        writer.start()
    except Crash:
        writer.close()
        raise
    return writer


@pytest.mark.parametrize("seed", range(6))
def test_power_cuts_at_every_step_of_strict_rounds_keep_every_acknowledged_event_once(tmp_path, seed):
    rng = random.Random(seed)
    requests = [_request(rng, tag) for tag in range(14)]
    model = StrictModel(INTERVAL, POLICY.lateness, POLICY.max_open, MAX_FILE_BYTES)
    for tag, (times, _) in enumerate(requests):
        model.apply(_model_rows(times, tag))
    expected = model.close_all()

    disk = PowerCutDisk(tmp_path)
    writer = _started(tmp_path, disk)
    index = crashes = 0
    while index < len(requests):
        # A crash at each step of this round in turn, then the round once more with no crash.
        disk.crash_at = disk.calls + 1 + crashes % 12 if rng.random() < 0.7 else None
        try:
            # A group: the request and the next one share one round (their windows interleave).
            group = [Request(Batch(*requests[i]), f"k{i}") for i in range(index, min(index + 2, len(requests)))]
            writer.apply_group(group)
            index += len(group)
            crashed = False
        except Crash:
            crashed = True
            crashes += 1
        if crashed or rng.random() < 0.2:
            writer.close()
            if rng.random() < 0.6:
                disk.power_cut()
            while True:
                if rng.random() < 0.3:
                    disk.crash_at = disk.calls + rng.randint(1, 6)
                try:
                    writer = _started(tmp_path, disk)
                    break
                except Crash:
                    pass
        assert len(writer.windows) <= POLICY.max_open
    disk.crash_at = None
    writer.close()
    disk.power_cut()
    writer = _started(tmp_path, disk)
    # The idle close, crashed at each of its steps in turn, then whole.
    for step in range(1, 8):
        disk.crash_at = disk.calls + step
        try:
            writer.commit_open()
            writer.settle()
            break
        except Crash:
            writer.close()
            disk.power_cut()
            writer = _started(tmp_path, disk)
    disk.crash_at = None
    writer.commit_open()
    writer.close()
    disk.power_cut()
    writer = _started(tmp_path, disk)
    writer.close()
    assert csv_files(tmp_path) == expected
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".inprogress")]


def _rows(times: list[int], tag: str) -> Rows:
    return Rows.from_lines([f"{tag}{i},{t}" for i, t in enumerate(times)])


def _decoded(directory) -> dict[str, bytes]:
    """Every committed file, decompressed (raises when one is not a valid stream)."""
    out = {}
    for path in sorted(directory.glob("user-events-*")):
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        elif path.name.endswith(".zst"):
            data = b"".join(zstandard.ZstdDecompressor().read_to_iter(io.BytesIO(data)))
        out[path.name] = data
    return out


def _restarted(directory, first: dict, then: dict, first_times: list[int], then_times: list[int]) -> dict[str, bytes]:
    """A window left open by one configuration, the server restarted with another, more events."""
    writer = Writer(directory, fsync=False, **first)
    writer.start()
    writer.apply(first_times, _rows(first_times, "a"))
    writer.close()
    writer = Writer(directory, fsync=False, **then)
    writer.start()
    writer.apply(then_times, _rows(then_times, "b"))
    writer.commit_open()
    writer.close()
    return _decoded(directory)


@pytest.mark.parametrize("policy", [WindowPolicy(INTERVAL), StrictWindows(INTERVAL)], ids=["first-event", "strict"])
@pytest.mark.parametrize(
    ("before", "after"),
    [(Compress.GZIP, Compress.NONE), (Compress.NONE, Compress.ZSTD), (Compress.ZSTD, Compress.GZIP)],
)
def test_a_restart_with_another_compress_commits_the_open_window_as_it_was_encoded(tmp_path, policy, before, after):
    """Found: the resumed window got the new encoding's bytes appended (a .csv.gz with plain rows
    in it); then, committed and not yet published, its part file was taken by a new window of the
    same start (X.csv and X.csv.gz share `.X.inprogress`) and its rows were lost."""
    files = _restarted(
        tmp_path,
        {"policy": policy, "compress": before},
        {"policy": policy, "compress": after},
        [BASE + MINUTE],
        [BASE + 2 * MINUTE],
    )
    rows = sorted(row for data in files.values() for row in data.splitlines())
    assert rows == [f"a0,{BASE + MINUTE}".encode(), f"b0,{BASE + 2 * MINUTE}".encode()]
    assert len(files) == 2


@pytest.mark.parametrize(
    ("first", "first_times"),
    [
        # --align first-event: its window holds an event before its start.
        ({"policy": WindowPolicy(INTERVAL)}, [BASE, BASE - 3 * MINUTE]),
        # --interval 10m: its window holds an event past the 5m window's end.
        ({"policy": StrictWindows(2 * INTERVAL, lateness=10 * INTERVAL)}, [BASE + 7 * MINUTE]),
    ],
    ids=["from-first-event", "from-10m"],
)
def test_a_restart_into_strict_windows_never_adds_to_a_window_of_other_bounds(tmp_path, first, first_times):
    """Found: strict events joined a recovered window of another policy whose start matched, so the
    file named 08:00 held 07:57 (first-event late event) or 08:07 (a 10m window) beside 5m-strict rows."""
    then = {"policy": StrictWindows(INTERVAL, lateness=10 * INTERVAL)}
    files = _restarted(tmp_path, first, then, first_times, [BASE + MINUTE])
    [strict_file] = [name for name, data in files.items() if data.startswith(b"b0,")]
    assert files[strict_file] == f"b0,{BASE + MINUTE}\n".encode()


def test_a_restart_with_a_lower_window_cap_holds_it_from_the_first_round(tmp_path):
    times = [BASE + k * INTERVAL for k in range(10)]
    files = _restarted(
        tmp_path,
        {"policy": StrictWindows(INTERVAL, lateness=100 * INTERVAL, max_open=16)},
        {"policy": StrictWindows(INTERVAL, lateness=100 * INTERVAL, max_open=2)},
        times,
        [BASE + 1],
    )
    assert sum(data.count(b"\n") for data in files.values()) == 11
    writer = Writer(tmp_path, StrictWindows(INTERVAL, lateness=100 * INTERVAL, max_open=2), fsync=False)
    writer.start()
    writer.apply(times, _rows(times, "c"))
    writer.close()
    writer = Writer(tmp_path, StrictWindows(INTERVAL, lateness=100 * INTERVAL, max_open=1), fsync=False)
    writer.start()
    late_in_open = [BASE + 9 * INTERVAL + 1]  # to a window left open: no new one opens
    writer.apply(late_in_open, _rows(late_in_open, "d"))
    assert len(writer.windows) == 1
    writer.close()


def test_first_event_after_strict_windows_writes_its_window_as_older_versions_read_it(tmp_path):
    """Found: the watermark of a strict run stayed in every later first-event record, written as
    `windows`: a downgrade to a version before strict windows read no open window and removed its
    part file, acknowledged rows and all."""
    writer = Writer(tmp_path, StrictWindows(INTERVAL), fsync=False)
    writer.start()
    writer.apply([BASE + MINUTE, BASE - 2 * INTERVAL], _rows([BASE + MINUTE, BASE - 2 * INTERVAL], "s"))
    writer.close()
    writer = Writer(tmp_path, WindowPolicy(INTERVAL), fsync=False)
    writer.start()
    writer.commit_open()
    writer.apply([BASE + 20 * MINUTE], _rows([BASE + 20 * MINUTE], "f"))
    writer.close()
    [record] = Journal(tmp_path, writer.disk, fsync=False).read()[0][-1:]
    assert record.open is not None and record.open.start == BASE + 20 * MINUTE and not record.windows


@pytest.mark.parametrize("interval", [7 * MINUTE, MAX_INTERVAL_NS, SECOND])
def test_events_at_the_edges_of_the_range_under_strict_windows(tmp_path, interval):
    """Years 1678 and 2262, an interval that does not divide a day, the longest one."""
    times = [EARLIEST_NS, LATEST_NS - 1, EARLIEST_NS + 1, LATEST_NS - 2]
    policy = StrictWindows(interval, lateness=MAX_INTERVAL_NS)
    writer = Writer(tmp_path, policy, fsync=False)
    writer.start()
    writer.apply(times, _rows(times, "e"))
    writer.close()
    writer = Writer(tmp_path, policy, fsync=False)
    writer.start()
    writer.commit_open()
    writer.close()
    files = csv_files(tmp_path)
    assert sum(data.count(b"\n") for data in files.values()) == 4
    for name, data in files.items():
        for row in data.splitlines():
            t = int(row.split(b",")[1])
            assert name.startswith(f"user-events-{utc_stamp(t - t % interval)}")


def test_hostile_files_at_late_window_names_are_never_written_through_nor_published(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    target = elsewhere / "precious"
    target.write_text("precious\n")
    policy = StrictWindows(INTERVAL)
    writer = Writer(out, policy, fsync=False)
    writer.start()
    first = [BASE + MINUTE, BASE + INTERVAL + MINUTE]  # the second commits the first window
    writer.apply(first, _rows(first, "a"))
    stem = f"user-events-{utc_stamp(BASE)}"
    # While it runs: a symlink at the late file's name, a FIFO at the next one's part file, a
    # foreign in-progress file, and a symlink at the part file of the window still open.
    os.symlink(target, out / f"{stem}-1.csv")
    os.mkfifo(out / f".{stem}-2.inprogress")
    (out / ".theirs.inprogress").write_text("theirs\n")
    late = [BASE + 2 * MINUTE]
    writer.apply(late, _rows(late, "b"))  # late: a new file for the committed window
    [late_window] = [w for w in writer.windows.values() if w.late]
    assert late_window.name not in (f"{stem}.csv", f"{stem}-1.csv")
    # A symlink at the late window's own final name before it is committed: published elsewhere.
    os.symlink(target, out / late_window.name)
    writer.commit_open()
    writer.close()
    writer = Writer(out, policy, fsync=False)
    writer.start()
    writer.close()
    assert target.read_text() == "precious\n"
    assert (out / ".theirs.inprogress").read_text() == "theirs\n"
    regular = {p.name: p.read_bytes() for p in out.glob("user-events-*") if not p.is_symlink()}
    [published_late] = set(regular) - {f"{stem}.csv", f"user-events-{utc_stamp(BASE + INTERVAL)}.csv"}
    assert published_late.startswith(f"{stem}-") and published_late != late_window.name
    assert regular[published_late] == f"b0,{late[0]}\n".encode()


class _FailingDisk(LocalDisk):
    """A disk whose n-th write, sync, create or publish fails with ENOSPC (then works again)."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.calls = 0
        self.fail_at: int | None = None
        self.failed = 0

    def _step(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.failed += 1
            raise OSError(errno.ENOSPC, "No space left on device")

    def write(self, fd, chunks, offset):
        self._step()
        super().write(fd, chunks, offset)

    def sync_data(self, fd):
        self._step()
        super().sync_data(fd)

    def sync_directory(self):
        self._step()
        super().sync_directory()

    def create(self, name):
        self._step()
        return super().create(name)

    def publish(self, src_name, dst_name):
        self._step()
        super().publish(src_name, dst_name)

    def replace(self, src_name, dst_name):
        self._step()
        super().replace(src_name, dst_name)


@pytest.mark.parametrize("step", range(1, 24))
def test_the_idle_close_of_sixteen_windows_on_a_failing_disk_loses_and_repeats_nothing(tmp_path, step):
    policy = StrictWindows(INTERVAL, lateness=100 * INTERVAL, max_open=16)
    times = [BASE + k * INTERVAL + k for k in range(16)]
    disk = _FailingDisk(tmp_path)
    writer = Writer(tmp_path, policy, disk=disk)
    writer.start()
    writer.apply(times, _rows(times, "a"), key="a")
    assert len(writer.windows) == 16
    disk.fail_at = disk.calls + step  # somewhere in the idle close: the record, a rename, the snapshot
    try:
        writer.commit_open()
        writer.settle()
    except StorageError:
        pass
    assert disk.failed == 1
    disk.fail_at = None
    assert writer.apply(times, _rows(times, "a"), key="a").replay or writer.heal()  # the key still holds
    assert writer.heal()
    writer.commit_open()  # the shutdown
    writer.settle()
    writer.close()
    writer = Writer(tmp_path, policy)
    writer.start()
    writer.close()
    files = csv_files(tmp_path)
    assert sorted(row for data in files.values() for row in data.splitlines()) == sorted(
        f"a{i},{t}".encode() for i, t in enumerate(times)
    )
    assert len(files) == 16 and not list(tmp_path.glob(".*.inprogress"))


@pytest.mark.parametrize("seed", range(2))
def test_a_thousand_windows_per_request_through_power_cuts(tmp_path, seed):
    """Rounds spanning 1000 windows each (the per-request cap's default) with 16 open: the cap
    commits hundreds per round and part files are written, synced and closed in batches."""
    rng = random.Random(seed)
    policy = StrictWindows(INTERVAL, lateness=0, max_open=16)
    requests = []
    for r in range(3):
        times = [BASE + w * INTERVAL + rng.randrange(INTERVAL) for w in range(1000)]
        rng.shuffle(times)
        requests.append((times, _rows(times, f"r{r}-")))
    model = StrictModel(INTERVAL, 0, 16)
    for times, rows in requests:
        model.apply(list(zip(times, [line.encode() + b"\n" for line in rows.text().splitlines()], strict=True)))
    expected = model.close_all()

    disk = PowerCutDisk(tmp_path)
    writer = Writer(tmp_path, policy, disk=disk)
    writer.start()
    index, crashed = 0, False
    while index < len(requests):
        # A crash somewhere in each request's first try (its part files are synced in batches of 256).
        disk.crash_at = None if crashed else disk.calls + rng.randint(1, 1100)
        try:
            writer.apply(*requests[index], key=f"k{index}")
            index, crashed = index + 1, False
        except Crash:
            crashed = True
            writer.close()
            disk.power_cut()
            disk.crash_at = None
            writer = Writer(tmp_path, policy, disk=disk)
            writer.start()
    disk.crash_at = None
    writer.commit_open()
    writer.close()
    disk.power_cut()
    writer = Writer(tmp_path, policy, disk=disk)
    writer.start()  # publishes what the last record committed
    writer.close()
    assert csv_files(tmp_path) == expected
    assert disk.crashes >= 1


def test_a_watermark_far_ahead_makes_later_events_late_files_that_the_cap_and_a_restart_bound(tmp_path):
    policy = StrictWindows(INTERVAL, lateness=0, max_open=4)
    model = StrictModel(INTERVAL, 0, 4)
    requests = [[LATEST_NS - 1]]  # a clock gone wrong: 2261
    rng = random.Random(5)
    requests += [[BASE + rng.randrange(10 * INTERVAL) for _ in range(5)] for _ in range(12)]
    writer = Writer(tmp_path, policy, fsync=False)
    writer.start()
    for tag, times in enumerate(requests):
        model.apply(_model_rows(times, tag))
        writer.apply(times, Rows.from_lines([f"r{tag}-{i},{t}" for i, t in enumerate(times)]))
        assert len(writer.windows) <= 4 and all(
            w.late for w in writer.windows.values() if w.start < BASE + INTERVAL * 10
        )
        if tag % 5 == 4:  # a restart keeps the watermark: the windows stay late files
            writer.close()
            writer = Writer(tmp_path, policy, fsync=False)
            writer.start()
    writer.commit_open()
    writer.close()
    assert csv_files(tmp_path) == model.close_all()


class _EveryStepDisk(PowerCutDisk):
    """A power-cut disk that can also stop the process at a creation, rename or removal."""

    def create(self, name):
        self._step()
        return super().create(name)

    def publish(self, src_name, dst_name):
        self._step()
        super().publish(src_name, dst_name)

    def replace(self, src_name, dst_name):
        self._step()
        super().replace(src_name, dst_name)

    def remove(self, name):
        self._step()
        super().remove(name)


def _round_setup() -> tuple[list[int], list[list[int]]]:
    """Events opening three windows, then a group of two requests that append to them, open two
    more (the cap commits the oldest), roll one by --max-file-bytes, add a late event and move the
    watermark past two windows."""
    setup = [BASE + MINUTE, BASE + INTERVAL + MINUTE, BASE + 2 * INTERVAL + MINUTE]
    group = [
        [BASE + 2 * INTERVAL + k for k in range(6)] + [BASE + 3 * INTERVAL + 1, BASE + 2],
        [BASE + 4 * INTERVAL + 5, BASE + 2 * INTERVAL + 9, BASE + 7 * INTERVAL, BASE + 3],
    ]
    return setup, group


def _group_requests(group: list[list[int]]) -> list[Request]:
    return [Request(Batch(times, _rows(times, f"g{r}-")), f"g{r}") for r, times in enumerate(group)]


@pytest.mark.parametrize("cut", [False, True], ids=["sigkill", "power-cut"])
def test_a_crash_at_every_step_of_a_round_over_several_windows(tmp_path, cut):
    setup, group = _round_setup()
    policy = StrictWindows(INTERVAL, lateness=INTERVAL, max_open=3)
    model = StrictModel(INTERVAL, INTERVAL, 3, MAX_FILE_BYTES)
    model.apply([(t, f"s{i},{t}\n".encode()) for i, t in enumerate(setup)])
    for r, times in enumerate(group):
        model.apply([(t, f"g{r}-{i},{t}\n".encode()) for i, t in enumerate(times)])
    expected = model.close_all()

    def run(directory, crash_step: int | None) -> tuple[int, bool]:
        directory.mkdir()
        disk = _EveryStepDisk(directory)
        writer = Writer(directory, policy, disk=disk, max_file_bytes=MAX_FILE_BYTES)
        writer.start()
        writer.apply(setup, _rows(setup, "s"), key="s")
        before = disk.calls
        disk.crash_at = None if crash_step is None else before + crash_step
        crashed = False
        try:
            writer.apply_group(_group_requests(group))
        except Crash:
            crashed = True
        steps = disk.calls - before
        writer.close()
        if cut:
            disk.power_cut()
        disk.crash_at = None
        writer = Writer(directory, policy, disk=disk, max_file_bytes=MAX_FILE_BYTES)
        writer.start()
        # Nothing unacknowledged survives: the journal's events are the setup's, or the group's too.
        on_disk = sorted(
            row for p in directory.iterdir() if "user-events" in p.name for row in p.read_bytes().splitlines()
        )
        assert on_disk in (
            sorted(f"s{i},{t}".encode() for i, t in enumerate(setup)),
            sorted(row for data in expected.values() for row in data.splitlines()),
        )
        writer.apply_group(_group_requests(group))  # the client resends: applied once either way
        writer.commit_open()
        writer.close()
        if cut:
            disk.power_cut()
            writer = Writer(directory, policy, disk=disk)
            writer.start()  # publishes what the last record committed
            writer.close()
        assert csv_files(directory) == expected, crash_step
        return steps, crashed

    steps, crashed = run(tmp_path / "clean", None)
    assert not crashed and steps >= 8
    print(f"{steps} steps")
    for step in range(1, steps + 1):
        assert run(tmp_path / f"crash-{step}", step)[1]


@pytest.mark.parametrize("cut", [False, True], ids=["sigkill", "power-cut"])
def test_a_crash_at_every_step_of_the_idle_close_of_several_windows(tmp_path, cut):
    setup, group = _round_setup()
    policy = StrictWindows(INTERVAL, lateness=10 * INTERVAL, max_open=16)  # every window stays open
    times = setup + [t for request in group for t in request]

    def run(directory, crash_step: int | None) -> int:
        directory.mkdir()
        disk = _EveryStepDisk(directory)
        writer = Writer(directory, policy, disk=disk, max_file_bytes=MAX_FILE_BYTES)
        writer.start()
        writer.apply(times, _rows(times, "a"), key="a")
        assert len(writer.windows) >= 2
        before = disk.calls
        disk.crash_at = None if crash_step is None else before + crash_step
        try:
            writer.commit_open()
            writer.settle()
        except Crash:
            pass
        steps = disk.calls - before
        writer.close()
        if cut:
            disk.power_cut()
        disk.crash_at = None
        writer = Writer(directory, policy, disk=disk, max_file_bytes=MAX_FILE_BYTES)
        writer.start()
        assert writer.apply(times, _rows(times, "a"), key="a").replay
        writer.commit_open()
        writer.close()
        if cut:
            disk.power_cut()
            writer = Writer(directory, policy, disk=disk)
            writer.start()
            writer.close()
        files = csv_files(directory)
        rows = sorted(row for data in files.values() for row in data.splitlines())
        assert rows == sorted(f"a{i},{t}".encode() for i, t in enumerate(times)), crash_step
        assert not list(directory.glob(".*.inprogress"))
        return steps

    steps = run(tmp_path / "clean", None)
    assert steps >= 5
    for step in range(1, steps + 1):
        run(tmp_path / f"crash-{step}", step)
