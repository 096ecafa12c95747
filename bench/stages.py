"""Where a request's time goes: the server's CPU per request, split into the stages of its path,
for W1 (fsync always, one connection from Python), W3 (`--fsync never`, `wrk -t1 -c1`) and W4
(fsync always, `wrk -t1 -c64`).

The server runs under `py-spy record --nonblocking` (samples every thread's Python stack a
thousand times a second without stopping it); each sample goes to the stage of the innermost frame
that names one (STAGES), so a stage's share counts everything it calls. Samples of a thread waiting
for work (the writer's queue, an idle pool thread) are not counted. What runs in C below the event
loop (uvloop's epoll and socket reads and writes outside a Python call) has no Python frame of its
own: it is the "event loop" line. Server CPU per request (user + system, from /proc) is measured
over the same seconds, without the profiler, in a run of its own just before.

    .venv/bin/python bench/stages.py                 # W1, W3, W4
    .venv/bin/python bench/stages.py --only W4 --seconds 5

Needs py-spy (`pip install py-spy`) and wrk.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bench
from bench import generate, served

# Innermost match wins: function names (py-spy's "Class.method" or "function") -> stage.
STAGES = {
    "receive": (
        "ConnectionProtocol.data_received",
        "ConnectionProtocol._feed",
        "ConnectionProtocol.on_body",
        "IngestCycle.feed",
        "IngestRequest.feed",
        "BodyReader.feed",
        "BodyReader.finish",
        "IngestCycle.body_complete",
        "ConnectionProtocol.on_message_complete",
    ),
    "parse (head, checks)": (
        "ConnectionProtocol.on_message_begin",
        "ConnectionProtocol.on_url",
        "ConnectionProtocol.on_header",
        "ConnectionProtocol.on_headers_complete",
        "ConnectionProtocol._begin_ingest",
        "ConnectionProtocol._is_ingest",
        "IngestCycle.__init__",
        "IngestRequest.__init__",
        "check_head",
        "LimitedConnection._arm_header_timer",
        "LimitedConnection._arm_body_timer",
    ),
    "native pass": ("transcode", "_prepare_native", "slices", "WindowPolicy.past_limit"),
    "hand-off": (
        "Committer.submit",
        "Committer._start_round",
        "Committer._round",
        "SerialThread.submit",
        "SerialThread._serve",
        "SerialThread._answered.<locals>.answered",
        "Ingest.submit",
        "Ingest._commit",
        "IngestRequest.serve",
        "IngestCycle._serve",
    ),
    "write (placement, journal, files)": (
        "Writer.apply_group",
        "Writer.light",
        "SyncRound.run",
        "LocalDisk.write",
    ),
    "write and sync (one C call)": ("LocalDisk.write_and_sync",),
    "sync": ("LocalDisk.sync_data", "LocalDisk.sync_directory", "LocalDisk.sync_filesystem", "SyncRound.sync_all"),
    "answer": (
        "Committer._finish",
        "Ingest._commit.<locals>.committed",
        "Ingest._after_round",
        "IngestRequest._finish",
        "IngestCycle._answer",
        "HeadJoiningTransport.write_whole",
        "ConnectionProtocol.on_response_complete",
        "RequestLog.record",
    ),
}
_STAGE_OF = {name: stage for stage, names in STAGES.items() for name in names}
EVENT_LOOP = "event loop (uvloop in C: epoll, socket reads and writes)"
OTHER = "other (the rest, and threads sampled outside any Python frame)"

# (events per request, connections or 0 for the Python client, fsync)
WORKLOADS = {"W1": (400, 0, "always"), "W3": (1, 1, "never"), "W4": (1, 64, "always")}


def _idle(frames: list[str]) -> bool:
    """A thread waiting for work: the writer at its queue, a pool thread at its own (the loop's
    function itself innermost: the wait is a C call, with no frame of its own)."""
    return frames[-1].split(" (")[0] in ("SerialThread._serve", "_worker")


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        stage = _STAGE_OF.get(frame.split(" (")[0])
        if stage is not None:
            return stage
    python = [f for f in frames if "(" in f and not f.startswith("thread (")]
    return EVENT_LOOP if python and python[-1].split(" (")[0] in ("Runner.run", "run_until_complete") else OTHER


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bodies(per_request: int, count: int) -> list[bytes]:
    """`count` request bodies of ordered events (made once, before any measuring)."""
    lines, _ = generate(per_request * count, random.Random(1), 1_720_000_000 * 10**9)
    return [b"".join(lines[i : i + per_request]) for i in range(0, len(lines), per_request)]


def load(name: str, port: int, workdir: Path, seconds: float, sequence: list[bytes]) -> int:
    """Drive the server for `seconds` (the Python client sends `sequence` in a loop); the requests answered."""
    per_request, connections, _ = WORKLOADS[name]
    if connections == 0:  # one keep-alive connection from Python, bodies in order
        conn = http.client.HTTPConnection("127.0.0.1", port)
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            conn.request("POST", "/user/event", body=sequence[done % len(sequence)])
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            done += 1
        conn.close()
        return done
    return bench._wrk("wrk", workdir, port, sequence[0], connections, round(seconds))["requests"]


def profile(name: str, seconds: float, py_spy: str) -> None:
    per_request, connections, fsync = WORKLOADS[name]
    sequence = bodies(per_request, 2000 if connections == 0 else 1)
    with served(fsync) as server:
        load(name, server.port, server.workdir, 2, sequence)  # warm-up
        before = cpu_seconds(server.pid)
        requests = load(name, server.port, server.workdir, seconds, sequence)
        cpu_us = (cpu_seconds(server.pid) - before) / requests * 1e6
        raw = server.workdir / "py-spy.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.pid), "--rate", "1000", "--nonblocking", "--threads"]
            + ["--format", "raw", "--output", str(raw), "--duration", str(int(seconds))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # py-spy attaching (a profiler's start, not a result being waited for)
        profiled = load(name, server.port, server.workdir, seconds - 1, sequence)
        spy.wait()
    samples: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not _idle(frames):
            samples[stage_of(frames)] += int(count)
    total = sum(samples.values())
    sampled_us = total / 1000 / profiled * 1e6  # active thread time per request under the profiler
    how = f"wrk -t1 -c{connections}" if connections else "one connection from Python"
    print(f"\n{name} ({per_request}/req, {how}, fsync {fsync}): server CPU {cpu_us:.0f} µs per request")
    print("| stage | share of the server's sampled time | µs per request (sampled) |")
    print("|---|---:|---:|")
    for stage in [*STAGES, EVENT_LOOP, OTHER]:
        if samples[stage]:
            print(f"| {stage} | {samples[stage] / total:.0%} | {samples[stage] / total * sampled_us:.1f} |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=8, help="of load for each measurement (default 8)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() or shutil.which("wrk") is None:
        sys.exit("bench/stages.py needs py-spy (pip install py-spy) and wrk")
    bench.WORKDIR.mkdir(parents=True, exist_ok=True)
    print(f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    try:
        for name in args.only:
            profile(name, args.seconds, py_spy)
    finally:
        for workdir in bench.FINISHED:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
