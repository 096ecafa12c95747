"""Benchmark: the real server, driven over one keep-alive connection, one request at a time.

Workloads: W1 400 events per request, W2 20,000 events per request, W3 1 event per request,
each over one keep-alive connection from Python (W3 also under `wrk -t1 -c1`); W4 64 connections
of one event per request and W5 64 connections of 40, under wrk, with W4 held against a bare
uvicorn app that only reads the body (the ceiling). Each with fsync on and off. W1 and W2 run
once more with a bucket as output (a moto S3 server on loopback, in its own process at
--store-nice), each bucket run beside a local one: the ingest rate against local output, and how
fast the uploads drained. Reports events/s,
MB/s, p50/p99 latency and the server's peak RSS, and checks that every event landed in the output
files. A tenth more requests go first to warm the server up and are not measured (their rows
are checked too).

Runs are interleaved: --repeat passes over the whole plan of W1-W6 (and the W4 ceiling), each pass
running every workload once, and the table shows each workload's median with the range of its
runs. This machine's disk and CPU drift over minutes (fdatasync and file creation by several
times); back-to-back repeats would let a slow spell land on one workload, where interleaving
spreads it across all of them. The bucket, Parquet and prefill runs come after the passes, each
already paired with a local run beside it. Before W1's and W3's fsync-on runs in each pass, the
disk's own floor is timed on the same filesystem: one append of a request's bytes and an
fdatasync per request, with no server. After the table: each fsync-on W1/W3 against that floor,
and the targets, against the Go reference's figures (REFERENCE) and, for W4, the bare ceiling.

    make bench                      # all workloads
    .venv/bin/python bench/bench.py --only W1 --fsync always
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

WORDS = [
    "since",
    "that",
    "woman",
    "be",
    "doctor",
    "he",
    "bend",
    "nevertheless",
    "to",
    "this",
    "whomever",
    "whom",
    "child",
    "luck",
    "ouch",
    "too",
    "words",
    "others",
    "lately",
    "most",
    "mock",
    "outside",
    "you",
    "usually",
    "cough",
    "whose",
    "monthly",
    "lastly",
    "earlier",
    "us",
    "cypriot",
]
DOMAINS = ("murphy.org", "jakubowski.name", "fadel.net", "mcglynn.io", "erdman.net", "parker.info")

WORKLOADS = {
    # name: (events per request, requests)
    "W1": (400, 500),
    "W2": (20_000, 15),
    "W3": (1, 5_000),
}
# The Go reference service's own published figures, on this machine class, without fsync: events/s
# for W1 and W2, requests/s for W3 under `wrk -t1 -c1`.
REFERENCE = {"W1": 190_000, "W2": 190_000, "W3": 12_000}
# The targets: how many times the reference (W1, W2 with fsync on; W3 under wrk with fsync off),
# and W4 against the bare-uvicorn ceiling.
TARGETS = {"W1": 2, "W2": 5, "W3": 1}
W4_TARGET = 0.6
WARMUP = 0.1  # this share of extra requests goes first, unmeasured (first-touch of buffers and caches)
# Runs write under bench/out/ (git-ignored, on the filesystem `make run` writes ./data to); --dir
# picks another place.
WORKDIR = Path(__file__).resolve().parent / "out"
FINISHED: list[Path] = []  # run directories, deleted when the whole benchmark is done


def generate(n: int, rng: random.Random, start_ns: int, spread_ns: int = 0) -> tuple[list[bytes], int]:
    """Realistic events shaped like the seed datasets, one NDJSON line each: in time order, or
    with `spread_ns` at times drawn at random over [start_ns, start_ns + spread_ns)."""
    lines = []
    t = start_ns
    for _ in range(n):
        t = start_ns + rng.randrange(spread_ns) if spread_ns else t + rng.randrange(200_000_000, 1_800_000_000)
        seconds, nanos = divmod(t, 10**9)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}".rstrip("0").rstrip(".") + "Z"
        event = {
            "time": stamp,
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "id": rng.randrange(2**63),
            "active": rng.random() < 0.5,
            "email": f"{rng.choice(WORDS)}{rng.choice(WORDS)}@{rng.choice(DOMAINS)}",
            "phone": f"({rng.randrange(1000):03d}){rng.randrange(1000):03d}-{rng.randrange(10000):04d}",
            "description": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 7))).capitalize() + ".",
            "credits": rng.uniform(-1e9, 1e9),
        }
        lines.append(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    return lines, t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_children(pid: int) -> list[int]:
    """The process and its children (a server with a bucket as output has an upload process)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            children += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    return [pid, *map(int, children)]


def peak_rss_mib(pid: int) -> float:
    """The peak RSS of the server, plus its upload process's when it has one."""
    total = 0.0
    for process in with_children(pid):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def disk_probe(directory: Path, rounds: int = 20) -> tuple[float, float]:
    """Median ms of appending 100 KB and fdatasync-ing it, and of creating a file, next to the
    output. Both drift by several times over minutes on these virtual disks (file creation from
    0.011 to 0.33 ms), and the fsync-on and many-window figures follow them."""
    path = directory / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    block, syncs, creates = os.urandom(100_000), [], []
    try:
        for i in range(rounds):
            t0 = time.perf_counter()
            os.pwrite(fd, block, i * len(block))
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    for i in range(rounds):
        t0 = time.perf_counter()
        os.close(os.open(directory / f"probe-{i}", os.O_WRONLY | os.O_CREAT, 0o644))
        creates.append(time.perf_counter() - t0)
    for i in range(rounds):
        (directory / f"probe-{i}").unlink()
    return statistics.median(syncs) * 1000, statistics.median(creates) * 1000


def csv_bytes(body: bytes) -> int:
    """How many bytes of CSV rows the service writes for this NDJSON body."""
    from batched_event_api.events.transcode import transcode

    return len(transcode(bytearray(body), 1 << 20).rows.text().encode())


def sync_floor(directory: Path, body_bytes: int, requests: int, warmup: int = 10) -> dict:
    """The disk's floor for a request that must be on disk before its answer: `requests` rounds
    (after `warmup` unmeasured ones) each appending `body_bytes` of CSV rows to one file and
    fdatasync-ing it, in `directory` (the runs' filesystem). Requests/s and p50/p99 ms of a round.
    The file stays, to be deleted with the runs' outputs at the end: freeing tens of MB here (online
    discard) would land on the run that comes next."""
    event = json.loads(generate(1, random.Random(1), 1_720_000_000 * 10**9)[0][0])
    row = (",".join(str(v) for v in event.values()) + "\n").encode()
    block = (row * (body_bytes // len(row) + 1))[:body_bytes]
    fd, _ = tempfile.mkstemp(prefix="floor-", dir=directory)
    latencies = []
    try:
        offset = 0
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            os.pwrite(fd, block, offset)
            os.fdatasync(fd)
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
            offset += len(block)
    finally:
        os.close(fd)
    q = statistics.quantiles(latencies, n=100)
    rate = len(latencies) / sum(latencies)
    return {
        "workload": f"floor: {_size(body_bytes)} append + fdatasync",
        "body bytes": body_bytes,
        "requests": requests,
        "requests/s": rate,
        "p50 ms": q[49] * 1000,
        "p99 ms": q[98] * 1000,
    }


def _size(n: int) -> str:
    return f"{n / 1000:.0f} KB" if n >= 1000 else f"{n} B"


@dataclass
class Bucket:
    """A bucket on an S3 API server (moto's, in its own process) for the runs with a bucket as output."""

    endpoint: str
    name: str = "bench"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
        }

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def objects(self, prefix: str) -> Iterator[bytes]:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                yield client.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()


@contextlib.contextmanager
def bucket_server(nice: int = 0) -> Iterator[Bucket]:
    """moto's S3 server in its own process, at CPU priority `nice` (19: what it uses of these two
    cores is taken only when the service does not need them, as a store on other machines would)."""
    port = free_port()
    proc = subprocess.Popen(
        ["nice", "-n", str(nice), sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bucket = Bucket(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                bucket.client().create_bucket(Bucket=bucket.name)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling for the server to listen
        yield bucket
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Served:
    workdir: Path
    port: int
    pid: int
    fsync_ms: float  # the disk probes, just before the server started
    create_ms: float
    bucket: Bucket | None = None

    def rows(self) -> int:
        """Rows in the committed files (after the server stopped)."""
        return sum(rows for rows, _ in self.committed())

    def committed(self) -> Iterator[tuple[int, int]]:
        """Rows and bytes of each committed file: the run's objects in the bucket, or the files in
        its output directory and its partitions (Parquet files counted by their footer)."""
        if self.bucket is not None:
            return ((data.count(b"\n"), len(data)) for data in self.bucket.objects(self.workdir.name + "/"))
        return (_rows_and_size(p) for p in sorted((self.workdir / "out").rglob("user-events-*")))

    def backlog(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request("GET", "/readyz")
        answer = json.loads(conn.getresponse().read())
        conn.close()
        return answer["backlog"]


def _rows_and_size(path: Path) -> tuple[int, int]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows, path.stat().st_size
    data = path.read_bytes()
    return data.count(b"\n"), len(data)


@contextlib.contextmanager
def served(
    fsync: str, prefill: int = 0, bucket: Bucket | None = None, options: tuple[str, ...] = ()
) -> Iterator[Served]:
    """A fresh run directory (deleted at the very end), the disk probes, and the real server on it."""
    workdir = Path(tempfile.mkdtemp(prefix="bea-bench-", dir=WORKDIR))
    FINISHED.append(workdir)
    probe = disk_probe(workdir)
    (workdir / "out").mkdir()
    for i in range(prefill):  # an output directory that already holds many committed files
        (workdir / "out" / f"user-events-20000101-000000-{i}.csv").write_bytes(b"")
    if bucket is None:
        # A finishing step (Parquet, partitions): the writer works in a state directory.
        finishing = ("--state-dir", str(workdir / "state")) if {"--format", "--partition"} & {*options} else ()
        server, port = start_server(str(workdir / "out"), "--fsync", fsync, *finishing, *options)
    else:
        server, port = start_server(
            f"s3://{bucket.name}/{workdir.name}/", "--fsync", fsync, "--state-dir", str(workdir / "out"), env=bucket.env
        )
    try:
        yield Served(workdir, port, server.pid, *probe, bucket=bucket)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


def run(
    name: str,
    fsync: str,
    rng: random.Random,
    prefill: int = 0,
    bucket: Bucket | None = None,
    options: tuple[str, ...] = (),
) -> dict:
    per_request, requests = WORKLOADS[name]
    warmup = max(1, int(requests * WARMUP))
    lines, _ = generate(per_request * (warmup + requests), rng, 1_720_000_000 * 10**9)
    bodies = [b"".join(lines[i : i + per_request]) for i in range(0, len(lines), per_request)]
    drained = None
    with served(fsync, prefill, bucket, options) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        headers = {"Content-Type": "application/x-ndjson"}
        latencies = []
        for body in bodies[:warmup]:
            conn.request("POST", "/user/event", body=body, headers=headers)
            conn.getresponse().read()
        bodies = bodies[warmup:]
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            conn.request("POST", "/user/event", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {payload[:200]!r}")
        elapsed = time.perf_counter() - started
        rss = peak_rss_mib(server.pid)
        conn.close()
        if bucket is not None or "--format" in options:  # every committed window finished: the rate end to end
            while server.backlog()["windows"]:
                time.sleep(0.05)  # polling the server's own count
            drained = time.perf_counter() - started
    sizes = list(server.committed())
    rows = sum(n for n, _ in sizes)
    events = per_request * requests
    name = (
        f"{name} ({per_request}/req)"
        + (f", {prefill:,} files already there" if prefill else "")
        + (", bucket output" if bucket else "")
        + (f", {' '.join(options)}" if options else "")
    )
    if rows != per_request * (warmup + requests):
        raise RuntimeError(f"{name}: {rows} rows written for {per_request * (warmup + requests)} events sent")
    q = statistics.quantiles(latencies, n=100)
    return {
        "workload": name,
        "fsync": fsync,
        "events/s": events / elapsed,
        "requests/s": requests / elapsed,
        "MB/s": sum(map(len, bodies)) / elapsed / 1e6,
        "p50 ms": q[49] * 1000,
        "p99 ms": q[98] * 1000,
        "peak RSS MiB": rss,
        "rows checked": rows,
        "fsync ms": server.fsync_ms,
        "create ms": server.create_ms,
        "uploads drained s": drained,
        "uploaded MB": sum(size for _, size in sizes) / 1e6,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.body = [[%s]]
"""


# Workloads under wrk, a load generator in C: name -> (events per request, connections).
WRK_WORKLOADS = {"W3": (1, 1), "W4": (1, 64), "W5": (40, 64), "W6": (40, 64)}
# W6 is W5 with strict windows: event times drawn at random over 80 minutes, so that every request
# writes to all of 16 open five-minute windows.
WRK_SPREAD_NS = {"W6": 80 * 60 * 10**9}
WRK_OPTIONS = {"W6": ("--align", "interval", "--max-open-windows", "16")}


def run_wrk(name: str, fsync: str, rng: random.Random, seconds: int = 10) -> dict | None:
    """A WRK_WORKLOADS load on the real server, every answer checked to be 200 and every event
    counted in the files (None when wrk is not installed)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    per_request, connections = WRK_WORKLOADS[name]
    lines, _ = generate(per_request, rng, 1_720_000_000 * 10**9, WRK_SPREAD_NS.get(name, 0))
    body = b"".join(lines)
    options = WRK_OPTIONS.get(name, ())
    with served(fsync, options=options) as server:
        result = _wrk(wrk, server.workdir, server.port, body, connections, seconds)
        result["peak RSS MiB"] = peak_rss_mib(server.pid)
    rows = server.rows() // per_request
    # Requests still in flight when wrk stops counting may complete: up to one per connection.
    if not result["requests"] <= rows <= result["requests"] + connections:
        raise RuntimeError(f"wrk: {rows} requests' rows written for {result['requests']} requests answered")
    rate = result["requests/s"]
    return {
        "workload": f"{name} wrk -t1 -c{connections} ({per_request}/req{', ' + ' '.join(options) if options else ''})",
        "fsync": fsync,
        "events/s": rate * per_request,
        "requests/s": rate,
        "MB/s": rate * len(body) / 1e6,
        "p50 ms": result["p50 ms"],
        "p99 ms": result["p99 ms"],
        "peak RSS MiB": result["peak RSS MiB"],
        "rows checked": rows * per_request,
        "fsync ms": server.fsync_ms,
        "create ms": server.create_ms,
    }


def run_bare(name: str, rng: random.Random, seconds: int = 10) -> dict | None:
    """The ceiling for a WRK_WORKLOADS load: a bare uvicorn + httptools app that only reads the
    body and answers, under the same load on the same machine."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    per_request, connections = WRK_WORKLOADS[name]
    lines, _ = generate(per_request, rng, 1_720_000_000 * 10**9)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bea-bench-", dir=WORKDIR))
    FINISHED.append(workdir)
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(__file__).parent),
            "bare_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    )
    try:
        _wait_healthy(port)
        result = _wrk(wrk, workdir, port, b"".join(lines), connections, seconds)
        result["peak RSS MiB"] = peak_rss_mib(app.pid)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
    rate = result["requests/s"]
    return {
        "workload": f"{name} ceiling: bare uvicorn app that only reads the body",
        "fsync": "-",
        "events/s": rate * per_request,
        "requests/s": rate,
        "MB/s": 0.0,
        "p50 ms": result["p50 ms"],
        "p99 ms": result["p99 ms"],
        "peak RSS MiB": result["peak RSS MiB"],
        "fsync ms": float("nan"),
        "create ms": float("nan"),
    }


def _wrk(wrk: str, workdir: Path, port: int, body: bytes, connections: int, seconds: int, timeout: int = 2) -> dict:
    """wrk's answer counts and latencies; any error or answer that took longer than `timeout`
    seconds (wrk's own default: 2) fails the run."""
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % body.decode())
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"--timeout={timeout}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/user/event",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError("wrk saw errors:\n" + out)

    def latency(q: str) -> float:
        value, unit = re.search(rf"{q}%\s+([0-9.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "requests/s": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50 ms": latency("50"),
        "p99 ms": latency("99"),
    }


def start_server(output: str, *options: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """The real server on a free port, once it answers /healthz."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batched_event_api",
            "serve",
            "-o",
            output,
            "--port",
            str(port),
            "--log-level",
            "warning",
            *options,
        ],
        env={**os.environ, **(env or {})},
    )
    _wait_healthy(port)
    return server, port


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def median(measure, repeat: int) -> dict | None:
    """The run with the median events/s of `repeat` runs (None when the tool is missing)."""
    return median_of([measure() for _ in range(max(1, repeat))])


def median_of(runs: list[dict | None], key: str = "events/s") -> dict | None:
    """The run with the median `key` (events/s), with the range of all (None when there is none)."""
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    runs.sort(key=lambda r: r[key])
    chosen = dict(runs[len(runs) // 2])
    chosen["range"] = (runs[0][key], runs[-1][key])
    return chosen


def beside_local(name: str, fsync: str, repeat: int, **output: object) -> tuple[dict, dict, list[float]]:
    """Runs with another output (`bucket=` or `options=` of run), each beside a run with the
    plain local output: the median of each, and each pair's ratio of events/s, sorted."""
    pairs = [
        (run(name, fsync, random.Random(1)), run(name, fsync, random.Random(1), **output))  # type: ignore[arg-type]
        for _ in range(max(1, repeat))
    ]
    ratios = sorted(b["events/s"] / a["events/s"] for a, b in pairs)
    return median_of([b for _, b in pairs]), median_of([a for a, _ in pairs]), ratios  # type: ignore[return-value]


def main() -> None:
    global WORKDIR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = sorted(WORKLOADS.keys() | WRK_WORKLOADS.keys())
    parser.add_argument("--only", nargs="*", choices=names, default=names)
    parser.add_argument("--fsync", nargs="*", choices=["always", "never"], default=["always", "never"])
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="passes over the whole plan, each running every workload once; the table shows each "
        "workload's median by events/s (this machine is noisy)",
    )
    parser.add_argument("--dir", type=Path, default=WORKDIR, help=f"where the runs write (default {WORKDIR})")
    parser.add_argument(
        "--prefill",
        type=int,
        default=10_000,
        help="also run W1 (fsync on) with this many files already in the output directory (0: skip)",
    )
    parser.add_argument(
        "--bucket",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run W1 and W2 (fsync on) with a bucket as output (a moto S3 server on loopback)",
    )
    parser.add_argument(
        "--parquet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run W1 and W2 (fsync on) with --format parquet, each beside a CSV run",
    )
    parser.add_argument(
        "--store-nice",
        type=int,
        default=19,
        metavar="N",
        help="the S3 server's CPU priority for the bucket runs (default 19: a store on other "
        "machines takes no CPU from the service; 0: it competes for these cores as an equal)",
    )
    args = parser.parse_args()
    WORKDIR = args.dir
    WORKDIR.mkdir(parents=True, exist_ok=True)
    print(f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}", flush=True)
    header = (
        "| workload | fsync | events/s (median) | range of runs | requests/s | MB/s | p50 ms | p99 ms "
        "| peak RSS MiB (server and its upload process) | disk: 100 KB fdatasync ms | disk: file create ms |"
    )
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    # The plain runs go in --repeat passes over the whole plan, each pass running every workload once
    # (and the disk's floor before W1's and W3's fsync-on runs); the extra runs come after them.
    plain = [(name, fsync) for name in args.only for fsync in args.fsync]
    # The run with thousands of extra files goes last, and every output is deleted only at the end:
    # creating and deleting many files leaves this filesystem (mounted with online discard)
    # creating files up to 30 times slower for minutes (the probe columns show it), which would
    # otherwise land on whichever workload comes next.
    extras: list[tuple[str, str, int | str]] = []
    if args.bucket and "always" in args.fsync:
        extras += [(name, "always", "bucket") for name in ("W1", "W2") if name in args.only]
    if args.parquet and "always" in args.fsync:
        extras += [(name, "always", "parquet") for name in ("W1", "W2") if name in args.only]
    if "W1" in args.only and "always" in args.fsync and args.prefill:
        extras.append(("W1", "always", args.prefill))
    passes = max(1, args.repeat)
    # The bytes one request appends: the CSV rows of a generated body of the workload (W1: 400
    # events, W3: one), as the service renders them.
    floor_bytes = {
        name: csv_bytes(b"".join(generate(WORKLOADS[name][0], random.Random(1), 1_720_000_000 * 10**9)[0]))
        for name in ("W1", "W3")
    }
    floor_dir = Path(tempfile.mkdtemp(prefix="bea-bench-", dir=WORKDIR))
    FINISHED.append(floor_dir)
    runs: dict[tuple[str, str, str], list[dict | None]] = {}  # (workload, fsync, kind): its runs, in table order
    floors: dict[str, list[dict | None]] = {}
    against_local: list[str] = []

    def show(r: dict | None) -> None:
        if r is None:
            return
        if args.json:
            print(json.dumps(r))
        print(table_row(r), flush=True)

    try:
        for n in range(1, passes + 1):
            step = f"pass {n}/{passes}"
            ceiling_run = False
            for name, fsync in plain:
                if name in WORKLOADS:
                    if fsync == "always" and name in floor_bytes:
                        floor = progress(
                            f"{step}: {name} floor ({_size(floor_bytes[name])} append + fdatasync)",
                            lambda: sync_floor(floor_dir, floor_bytes[name], WORKLOADS[name][1]),  # noqa: B023
                        )
                        floor["workload"] = f"{name} {floor['workload']}"  # type: ignore[index]
                        floors.setdefault(name, []).append(floor)
                    runs.setdefault((name, fsync, "run"), []).append(
                        progress(f"{step}: {name} {fsync}", lambda: run(name, fsync, random.Random(1)))  # noqa: B023
                    )
                if name in WRK_WORKLOADS:
                    runs.setdefault((name, fsync, "wrk"), []).append(
                        progress(
                            f"{step}: {name} wrk -t1 -c{WRK_WORKLOADS[name][1]} {fsync}",
                            lambda: run_wrk(name, fsync, random.Random(1)),  # noqa: B023
                        )
                    )
                if name == "W4" and not ceiling_run:  # the ceiling W4 is held against, once a pass
                    ceiling_run = True
                    runs.setdefault((name, "-", "ceiling"), []).append(
                        progress(f"{step}: {name} ceiling (bare uvicorn)", lambda: run_bare(name, random.Random(1)))  # noqa: B023
                    )
        medians = {key: median_of(rs) for key, rs in runs.items()}
        for r in medians.values():
            show(r)
        floor_medians = {name: median_of(fs, key="requests/s") for name, fs in floors.items()}
        if args.json:
            for floor in filter(None, floor_medians.values()):
                print(json.dumps(floor), flush=True)
        for name, fsync, extra in extras:
            print(
                f"{name} {fsync}, {extra if isinstance(extra, str) else f'{extra:,} files already there'} ...",
                file=sys.stderr,
                flush=True,
            )
            if extra == "bucket":
                # Each bucket run beside a local one, alternating: this disk drifts over minutes,
                # and a ratio of neighbouring runs is what it can show.
                with bucket_server(args.store_nice) as bucket:
                    r, base, ratios = beside_local(name, fsync, args.repeat, bucket=bucket)
                against_local.append(
                    f"{name} with a bucket as output (S3 server at nice {args.store_nice}): ingest {r['events/s']:,.0f} "
                    f"events/s against {base['events/s']:,.0f} with local output in the runs beside them; bucket/local "
                    f"of each pair: median {statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}); "
                    f"{r['uploaded MB']:.0f} MB of windows all uploaded {r['uploads drained s']:.1f} s after the "
                    f"first measured request ({r['uploaded MB'] / r['uploads drained s']:.1f} MB/s end to end)"
                )
            elif extra == "parquet":
                # Beside a CSV run each, alternating, as the bucket runs are.
                r, base, ratios = beside_local(name, fsync, args.repeat, options=("--format", "parquet"))
                against_local.append(
                    f"{name} with --format parquet: ingest {r['events/s']:,.0f} events/s against {base['events/s']:,.0f} "
                    f"with CSV output in the runs beside them; parquet/CSV of each pair: median "
                    f"{statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}); "
                    f"{r['uploaded MB']:.1f} MB of Parquet for {base['uploaded MB']:.1f} MB of CSV "
                    f"({r['uploaded MB'] / base['uploaded MB']:.2f}x), all converted "
                    f"{r['uploads drained s']:.1f} s after the first measured request"
                )
            else:
                r = median(lambda: run(name, fsync, random.Random(1), prefill=extra), args.repeat)  # type: ignore[arg-type]  # noqa: B023
            show(r)
        for line in against_local:
            print(line)
        for name, floor in floor_medians.items():
            for kind in ("run", "wrk"):
                r = medians.get((name, "always", kind))
                if floor is None or r is None:
                    continue
                label = name if kind == "run" else f"{name} wrk -t1 -c{WRK_WORKLOADS[name][1]}"
                print(
                    f"{label} fsync always against the disk's floor (one {_size(floor['body bytes'])} append + "
                    f"fdatasync per request, same filesystem): {r['requests/s']:,.0f} requests/s against "
                    f"{floor['requests/s']:,.0f} ({r['requests/s'] / floor['requests/s']:.2f}x); "
                    f"p50 {r['p50 ms']:.2f} ms against {floor['p50 ms']:.2f} ms"
                )
        for name in ("W1", "W2"):
            r = medians.get((name, "always", "run"))
            if r is not None:
                print(
                    f"{name} (fsync always) against the reference: {r['events/s'] / REFERENCE[name]:.2f}x "
                    f"({r['events/s']:,.0f} against {REFERENCE[name]:,} events/s; target {TARGETS[name]:g}x)"
                )
        r = medians.get(("W3", "never", "wrk"))
        if r is not None:
            print(
                f"W3 wrk -t1 -c1 (fsync never) against the reference: {r['requests/s'] / REFERENCE['W3']:.2f}x "
                f"({r['requests/s']:,.0f} against {REFERENCE['W3']:,} requests/s; target {TARGETS['W3']:g}x)"
            )
        ceiling = medians.get(("W4", "-", "ceiling"))
        if ceiling is not None:
            for fsync in args.fsync:
                r = medians.get(("W4", fsync, "wrk"))
                if r is not None:
                    print(
                        f"W4 against the ceiling, fsync {r['fsync']}: {r['requests/s'] / ceiling['requests/s']:.2f}x "
                        f"({r['requests/s']:,.0f} against {ceiling['requests/s']:,.0f} requests/s; "
                        f"target {W4_TARGET:g}x)"
                    )
    finally:
        for workdir in FINISHED:
            shutil.rmtree(workdir, ignore_errors=True)


def progress(label: str, measure: Callable[[], dict | None]) -> dict | None:
    """One run, with a line on stderr to say which and that it finished."""
    print(f"{label} ...", end="", file=sys.stderr, flush=True)
    r = measure()
    done = "skipped (wrk is not installed)" if r is None else f"done ({r['requests/s']:,.0f} requests/s)"
    print(f" {done}", file=sys.stderr, flush=True)
    return r


def table_row(r: dict) -> str:
    low, high = r["range"]
    return (
        f"| {r['workload']} | {r['fsync']} | {r['events/s']:,.0f} | {low:,.0f}–{high:,.0f} | {r['requests/s']:,.0f} | "
        f"{r['MB/s']:.1f} | {r['p50 ms']:.2f} | {r['p99 ms']:.2f} | {r['peak RSS MiB']:.0f} | {r['fsync ms']:.2f} | "
        f"{r['create ms']:.3f} |"
    )


if __name__ == "__main__":
    main()
