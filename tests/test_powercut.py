"""Power cuts: a crash keeps the page cache, a power cut keeps only what was synced.

The writer runs on a disk double (powercut.py) that drops, at a simulated power cut, whatever was
written but not synced. Sequences of crash -> recover -> resend -> cut must keep every
acknowledged request exactly once: the files equal those of an uninterrupted run.
"""

from __future__ import annotations

import os
import random

import pytest
from conftest import csv_files
from model import generate_events, ndjson
from powercut import Crash, PowerCutDisk

from batched_event_api.prepare import Rows, prepare
from batched_event_api.windows import WindowPolicy
from batched_event_api.writer import Writer

POLICY = WindowPolicy(300 * 10**9)
SECOND, MINUTE = 10**9, 60 * 10**9
SEEDS = [int(s) for s in os.environ.get("BEA_POWERCUT_SEEDS", "1,2,3,4,5,6").split(",")]


def started(directory, disk) -> Writer:
    writer = Writer(directory, POLICY, disk=disk)
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


def _requests(seed: int) -> list[tuple[list[int], Rows]]:
    events = generate_events(random.Random(seed), 1600)
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(events):
        n = rng.choice([1, 5, 20, 60])
        prepared = prepare(ndjson(events[i : i + n]), max_line=1 << 20)
        out.append((prepared.times, prepared.rows))
        i += n
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_crashes_resends_and_power_cuts_keep_every_acknowledged_request_once(tmp_path, seed):
    requests = _requests(seed)
    clean = tmp_path / "clean"
    clean.mkdir()
    writer = Writer(clean, POLICY, fsync=False)  # the same files; durability is not under test here
    writer.start()
    for i, (times, rows) in enumerate(requests):
        writer.apply(times, rows, key=f"k{i}")
    writer.commit_open()
    writer.close()
    expected = csv_files(clean)

    out = tmp_path / "out"
    out.mkdir()
    disk = PowerCutDisk(out)
    rng = random.Random(seed)
    writer = started(out, disk)
    index = cuts = cuts_that_dropped = replays = 0
    while index < len(requests):
        if rng.random() < 0.3:
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
                try:
                    writer = started(out, disk)
                    break
                except Crash:
                    pass
    disk.crash_at = None
    writer.commit_open()
    writer.close()
    disk.power_cut()
    writer = started(out, disk)
    writer.close()
    assert csv_files(out) == expected
    print(f"seed {seed}: {len(requests)} requests, {disk.crashes} crashes, {cuts} power cuts "
          f"({cuts_that_dropped} dropped unsynced writes), {replays} resends answered as replays")
    assert disk.crashes >= 10 and cuts_that_dropped >= 3
