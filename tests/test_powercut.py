"""Power cuts: a crash keeps the page cache, a power cut keeps only what was synced.

The writer runs on a disk double (powercut.py) that drops, at a simulated power cut, whatever was
written but not synced. Sequences of crash -> recover -> resend -> cut must keep every
acknowledged request exactly once: the files equal those of an uninterrupted run.
"""

from __future__ import annotations

import os
import random

import pytest

from batched_event_api.commit.writer import Writer
from batched_event_api.config import Compress
from batched_event_api.events.rows import Rows
from model import MINUTE, SECOND, generate_events, requests_of
from powercut import PowerCutDisk
from snapshots import csv_files, window_files
from writer_setup import POLICY, Crash, prepared

SEEDS = [int(s) for s in os.environ.get("BEA_POWERCUT_SEEDS", "1,2,3,4,5,6").split(",")]


def started(directory, disk, **options) -> Writer:
    writer = Writer(directory, POLICY, disk=disk, **options)
    try:
        writer.start()
    except Crash:
        writer.close()  # the process is gone: its descriptors and lock with it
        raise
    return writer


def test_a_replayed_request_survives_a_later_power_cut(tmp_path):
    """The issue's sequence: SIGKILL while request 1's round syncs, restart, its resend is answered
    as a replay, later requests touch other files, the power fails: request 1's rows must be there."""
    disk = PowerCutDisk(tmp_path)
    writer = started(tmp_path, disk)
    writer.apply([0], Rows.from_lines(["r0"]), key="k0")
    disk.crash_at = disk.calls + 4  # the request's row and record are written; the crash hits the first sync
    with pytest.raises(Crash):
        writer.apply([SECOND, 2 * SECOND], Rows.from_lines(["r1a", "r1b"]), key="k1")
    writer.close()
    assert disk.crashes == 1
    assert disk.unsynced() >= len(b"r1a\nr1b\n")  # the crash landed after the writes, before the syncs

    writer = started(tmp_path, disk)  # the page cache still has request 1: it is kept
    assert writer.apply([SECOND, 2 * SECOND], Rows.from_lines(["r1a", "r1b"]), key="k1").replay
    writer.apply([10 * MINUTE], Rows.from_lines(["r2"]), key="k2")  # closes the first window
    writer.apply([11 * MINUTE], Rows.from_lines(["r3"]), key="k3")
    writer.close()
    disk.power_cut()

    writer = started(tmp_path, disk)
    writer.commit_open()
    writer.close()
    assert csv_files(tmp_path) == {
        "user-events-19700101-000000.csv": b"r0\nr1a\nr1b\n",
        "user-events-19700101-001000.csv": b"r2\nr3\n",
    }


def _mixed(seed: int) -> list[tuple[list[int], Rows]]:
    """Requests of 1 to 60 generated events, a few windows each."""
    events = generate_events(random.Random(seed), 1600)
    return [prepared(request) for request in requests_of(events, random.Random(seed), [1, 5, 20, 60])]


def _large(seed: int) -> list[tuple[list[int], Rows]]:
    """Requests of over 1 MiB of rows: a round of many MiB written and synced file by file."""
    events = generate_events(random.Random(seed), 240)
    for event in events:
        event["description"] = "d" * 60_000
    return [prepared(events[i : i + 20]) for i in range(0, len(events), 20)]


def _many_windows(seed: int) -> list[tuple[list[int], Rows]]:
    """Requests spanning 300 windows each: their part files are written and synced in batches."""
    rng = random.Random(seed)
    out = []
    for r in range(4):
        times = [(r * 300 + w) * 10 * MINUTE + rng.randrange(MINUTE) for w in range(300)]
        out.append((times, Rows.from_lines([f"r{r}-w{w}" for w in range(300)])))
    return out


# name: (requests, writer options, the writer function crashes are aimed at, seeds)
WORKLOADS = {
    "mixed": (_mixed, {}, "_commit", SEEDS),
    "gzip": (_mixed, {"compress": Compress.GZIP}, "_commit", SEEDS[:2]),
    "compaction": (_mixed, {"compact_bytes": 512}, "_write_snapshot", SEEDS[:2]),  # one every request or two
    "large": (_large, {}, "write_and_sync", SEEDS[:2]),  # among the writes and syncs of a large round
    "many-windows": (_many_windows, {}, "place_segments", SEEDS[:2]),  # a batch of 256 part files flushed
}


@pytest.mark.parametrize(("workload", "seed"), [(w, s) for w, (*_, seeds) in WORKLOADS.items() for s in seeds])
def test_crashes_resends_and_power_cuts_keep_every_acknowledged_request_once(tmp_path, workload, seed):
    make, options, aim, _ = WORKLOADS[workload]
    requests = make(seed)
    clean = tmp_path / "clean"
    clean.mkdir()
    writer = Writer(clean, POLICY, fsync=False, **options)  # the same files; durability is not under test here
    writer.start()
    for i, (times, rows) in enumerate(requests):
        writer.apply(times, rows, key=f"k{i}")
    writer.commit_open()
    writer.close()
    expected = window_files(clean)
    assert expected

    out = tmp_path / "out"
    out.mkdir()
    disk = PowerCutDisk(out)
    rng = random.Random(seed)
    writer = started(out, disk, **options)
    index = cuts = cuts_that_dropped = replays = 0
    crash_rate = 0.3 if len(requests) > 40 else 0.8  # short workloads: more crashes per request
    while index < len(requests):
        if rng.random() < crash_rate:
            disk.crash_at = disk.calls + rng.randint(1, 8)  # somewhere in this request, or the next ones
        try:
            applied = writer.apply(*requests[index], key=f"k{index}")
            replays += applied.replay
            index += 1
            crashed = False
        except Crash:
            crashed = True
        if crashed or rng.random() < 0.1:
            writer.close()  # the process is gone: resend what got no answer
            if rng.random() < 0.5:
                cuts += 1
                cuts_that_dropped += disk.power_cut() > 0
            while True:  # recovery itself may be where the next crash lands
                if rng.random() < 0.3:
                    disk.crash_at = disk.calls + rng.randint(1, 6)
                try:
                    writer = started(out, disk, **options)
                    break
                except Crash:
                    pass
    disk.crash_at = None
    writer.commit_open()
    writer.close()
    disk.power_cut()
    writer = started(out, disk, **options)
    writer.close()
    assert window_files(out) == expected
    print(
        f"{workload} seed {seed}: {len(requests)} requests, {disk.crashes} crashes, {cuts} power cuts "
        f"({cuts_that_dropped} dropped unsynced writes), {replays} resends answered as replays; "
        f"crashes in {aim}: {disk.landed[aim]}, in recovery: {disk.landed['recover']}"
    )
    assert disk.landed[aim] >= 1 and disk.landed["recover"] >= 1
    assert disk.crashes >= min(10, len(requests) // 2) and cuts_that_dropped >= 1
