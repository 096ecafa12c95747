"""How cost grows: throughput, p50/p99 latency and the server's peak RSS as one input grows, the
others held, all with `--fsync always`. One line per cell; each cell checks that every event it
sent landed in the output. After the table, each dimension's last cell's cost per event (1 /
events/s) against its first's.

Dimensions:
- connections: 1, 8, 64, 512, 1000 under `wrk -t1 -cN`, one event per request;
- events per request: 1, 40, 400, 4000, 20000 over one keep-alive connection;
- files already in the output directory: 0, 10000, 100000 (W1: 400 events per request, one connection);
- Idempotency-Keys remembered: 0, KEYS_PER_HOUR (what a producer sending ~28 keyed requests a
  second leaves within the default retention of an hour) and 10x it, sent first (unmeasured, one
  event each, 64 connections), then keyed 40-event requests on 64 connections measured;
- open windows: 1 (times in order) and 16 (`--align interval --max-open-windows 16`, times over
  80 minutes), 64 connections x 40 events;
- output: a local directory and a bucket on SeaweedFS (`weed mini`, tests/seaweed.py) on loopback,
  W1 (the bucket cell: the ingest rate, and the rows checked once every window is uploaded; its
  peak RSS adds the server's upload process, not SeaweedFS's).

    .venv/bin/python bench/growth.py                  # every dimension, in full (many minutes)
    .venv/bin/python bench/growth.py --quick --only keys
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bench
from bench import Bucket, generate, peak_rss_mib, served

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from seaweed import SeaweedServer  # noqa: E402

KEYS_PER_HOUR = 100_000  # keyed requests a realistic producer leaves within the default retention (1 h)
START_NS = 1_720_000_000 * 10**9
ORDERED = 0
EIGHTY_MINUTES = 80 * 60 * 10**9
# Seconds before wrk gives up on an answer: longer than its default of 2, so that a slow answer under
# 1000 connections counts in p99 instead of failing the cell.
WRK_TIMEOUT = 30

# A keyed request per call: a fresh Idempotency-Key each time (PREFIX-n), and wrk stops once
# LIMIT answers came back. %s is the body.
KEYED_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
local sent, answered, limit = 0, 0, LIMIT
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, {["Content-Type"] = "application/x-ndjson", ["Idempotency-Key"] = "PREFIX-" .. sent}, nil)
end
response = function(status, headers, body)
  answered = answered + 1
  if limit > 0 and answered >= limit then wrk.thread:stop() end
end
"""


class Plan:
    """The sizes of one run: full, or --quick (a few seconds a cell, smaller counts)."""

    def __init__(self, quick: bool) -> None:
        self.seconds = 3 if quick else 10
        scale = 5 if quick else 1
        # events per request -> requests measured over one connection
        self.sequential = {1: 3000, 40: 1500, 400: 500, 4000: 60, 20000: 15}
        self.sequential = {k: max(4, v // scale) for k, v in self.sequential.items()}
        self.keys = [0, KEYS_PER_HOUR // (10 if quick else 1), KEYS_PER_HOUR * 10 // (10 if quick else 1)]


def cell(dimension: str, value: str, per_request: int, result: dict) -> dict:
    return {"dimension": dimension, "value": value, "events/request": per_request, **result}


def sequential(per_request: int, requests: int, **output: object) -> dict:
    """bench.run's loop (one keep-alive connection, warm-up first, rows checked) at this size."""
    name = f"growth-{per_request}x{requests}"
    bench.WORKLOADS[name] = (per_request, requests)
    return bench.run(name, "always", random.Random(1), **output)  # type: ignore[arg-type]


def connections(plan: Plan) -> Iterator[dict]:
    for n in (1, 8, 64, 512, 1000):
        yield cell("connections", str(n), 1, wrk_run(1, n, plan.seconds))


def events_per_request(plan: Plan) -> Iterator[dict]:
    for per_request, requests in plan.sequential.items():
        yield cell("events per request", f"{per_request:,}", per_request, sequential(per_request, requests))


def files_already(plan: Plan) -> Iterator[dict]:
    requests = plan.sequential[400]
    for prefill in (0, 10_000, 100_000):
        yield cell("files already there", f"{prefill:,}", 400, sequential(400, requests, prefill=prefill))


def keys(plan: Plan) -> Iterator[dict]:
    for remembered in plan.keys:
        yield cell("Idempotency-Keys remembered", f"{remembered:,}", 40, keyed_run(remembered, plan.seconds))


def open_windows(plan: Plan) -> Iterator[dict]:
    yield cell("open windows", "1", 40, wrk_run(40, 64, plan.seconds))
    options = ("--align", "interval", "--max-open-windows", "16")
    yield cell("open windows", "16", 40, wrk_run(40, 64, plan.seconds, EIGHTY_MINUTES, options))


def output(plan: Plan) -> Iterator[dict]:
    requests = plan.sequential[400]
    yield cell("output", "local directory", 400, sequential(400, requests))
    with seaweed_bucket() as bucket:
        yield cell("output", "bucket (SeaweedFS)", 400, sequential(400, requests, bucket=bucket))


DIMENSIONS: dict[str, Callable[[Plan], Iterator[dict]]] = {
    "connections": connections,
    "events": events_per_request,
    "keys": keys,
    "windows": open_windows,
    "output": output,
    "files": files_already,  # last: many files created and deleted slow this disk down for minutes
}


def wrk_run(
    per_request: int, conns: int, seconds: int, spread_ns: int = ORDERED, options: tuple[str, ...] = ()
) -> dict:
    """wrk on the real server, one body repeated; every answer 200 and every event counted."""
    wrk = wrk_binary()
    lines, _ = generate(per_request, random.Random(1), START_NS, spread_ns)
    body = b"".join(lines)
    with served("always", options=options) as server:
        result = bench._wrk(wrk, server.workdir, server.port, body, conns, seconds, WRK_TIMEOUT)
        rss = peak_rss_mib(server.pid)
    check(server.rows(), [(result["requests"], per_request)], conns)
    return measured(result, per_request, rss)


def keyed_run(remembered: int, seconds: int) -> dict:
    """`remembered` keyed one-event requests first (unmeasured), then keyed 40-event requests
    measured; every answer 200 and every event counted."""
    wrk = wrk_binary()
    one, _ = generate(1, random.Random(1), START_NS)
    forty, _ = generate(40, random.Random(2), START_NS)
    conns = 64
    with served("always") as server:
        filled = fill_keys(wrk, server, b"".join(one), remembered, conns)
        with keyed_script("measure", 0):
            result = bench._wrk(wrk, server.workdir, server.port, b"".join(forty), conns, seconds, WRK_TIMEOUT)
        rss = peak_rss_mib(server.pid)
    check(server.rows(), [*filled, (result["requests"], 40)], conns)
    return measured(result, 40, rss)


def fill_keys(wrk: str, server: bench.Served, body: bytes, remembered: int, conns: int) -> list[tuple[int, int]]:
    """`remembered` keyed requests of `body` (one event), as (requests answered, 1) per wrk run.
    wrk stops sending at a limit but runs out its duration: each run lasts about what the
    remaining keys take at the rate so far."""
    runs: list[tuple[int, int]] = []
    seconds, answered = 2, 0
    while answered < remembered:
        with keyed_script(f"fill{len(runs)}", remembered - answered):
            result = bench._wrk(wrk, server.workdir, server.port, body, conns, seconds, WRK_TIMEOUT)
        runs.append((result["requests"], 1))
        answered += result["requests"]
        seconds = max(1, math.ceil((remembered - answered) / result["requests/s"]) + 1)
    return runs


@contextlib.contextmanager
def keyed_script(prefix: str, limit: int) -> Iterator[None]:
    """bench._wrk with KEYED_SCRIPT in place of its plain POST script."""
    plain = bench.WRK_SCRIPT
    bench.WRK_SCRIPT = KEYED_SCRIPT.replace("PREFIX", prefix).replace("LIMIT", str(limit))
    try:
        yield
    finally:
        bench.WRK_SCRIPT = plain


def check(rows: int, phases: list[tuple[int, int]], conns: int) -> None:
    """Rows written against (requests answered, events each) of each wrk phase: requests in flight
    when wrk stops counting may complete, up to one per connection."""
    low = sum(requests * per for requests, per in phases)
    high = sum((requests + conns) * per for requests, per in phases)
    if not low <= rows <= high:
        raise RuntimeError(f"{rows} rows written for {low} to {high} events answered")


def measured(result: dict, per_request: int, rss: float) -> dict:
    return {
        "events/s": result["requests/s"] * per_request,
        "requests/s": result["requests/s"],
        "p50 ms": result["p50 ms"],
        "p99 ms": result["p99 ms"],
        "peak RSS MiB": rss,
    }


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed")
    return found


@contextlib.contextmanager
def seaweed_bucket() -> Iterator[Bucket]:
    """A bucket on `weed mini` on loopback, with bench's credentials."""
    directory = Path(tempfile.mkdtemp(prefix="bea-growth-weed-", dir=bench.WORKDIR))
    bench.FINISHED.append(directory)
    weed = SeaweedServer(directory, "bench", "bench").start()
    try:
        bucket = Bucket(weed.endpoint)
        bucket.client().create_bucket(Bucket=bucket.name)
        yield bucket
    finally:
        weed.stop()


def row(c: dict) -> str:
    return (
        f"| {c['dimension']} | {c['value']} | {c['events/request']:,} | {c['events/s']:,.0f} | {c['requests/s']:,.0f} "
        f"| {c['p50 ms']:.2f} | {c['p99 ms']:.2f} | {c['peak RSS MiB']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds a cell, smaller counts")
    parser.add_argument("--only", nargs="*", choices=list(DIMENSIONS), default=list(DIMENSIONS))
    parser.add_argument(
        "--dir", type=Path, default=bench.WORKDIR, help=f"where the runs write (default {bench.WORKDIR})"
    )
    args = parser.parse_args()
    bench.WORKDIR = args.dir
    bench.WORKDIR.mkdir(parents=True, exist_ok=True)
    plan = Plan(args.quick)
    print(f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}, fsync always")
    print(
        f"# Idempotency-Keys: {KEYS_PER_HOUR:,} keyed requests an hour "
        "(~28/s) fill the default retention; the cells send that and 10x it first"
        + (" (÷10 with --quick)" if args.quick else "")
    )
    print("| dimension | value | events/request | events/s | requests/s | p50 ms | p99 ms | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    ratios = []
    try:
        for name in (d for d in DIMENSIONS if d in args.only):
            cells = []
            for c in DIMENSIONS[name](plan):
                print(row(c), flush=True)
                cells.append(c)
            first, last = cells[0], cells[-1]
            ratios.append(
                f"{first['dimension']}: {first['value']} -> {last['value']}: cost per event "
                f"{first['events/s'] / last['events/s']:.3g}x, p99 {last['p99 ms'] / first['p99 ms']:.2f}x, "
                f"peak RSS {last['peak RSS MiB'] / first['peak RSS MiB']:.2f}x"
            )
        print()
        for line in ratios:
            print(line)
    finally:
        for workdir in bench.FINISHED:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
