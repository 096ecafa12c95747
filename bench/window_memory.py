"""Peak memory while one large window becomes Parquet: `python bench/window_memory.py 1GiB`.

Starts the real server with `--format parquet` and a day-long window, posts events in 8 MiB
requests until the window holds about that many bytes of CSV (all in the one window), lets the idle close commit it, waits until
the finish process has converted it and put it in the output directory, and prints the peak RSS
(VmHWM) of the server and of its finish process, each and together, with the conversion's time
and the Parquet file's size. Every row must be in the Parquet file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

from batched_event_api.events.transcode import transcode
from bench import WORKDIR, generate, start_server, with_children
from memory import parse_size, post

REQUEST = 5 * 2**20  # bytes per request: about W2's 20,000 events


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def backlog(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/readyz")
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer["backlog"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", nargs="?", default="1GiB", help="bytes of CSV the window holds before conversion")
    args = parser.parse_args()
    size = parse_size(args.size)
    # Times a few seconds apart from one start: every request's events fall in the same day-long window.
    lines, _ = generate(20_000, random.Random(1), 1_720_000_000 * 10**9)
    chunk = b"".join(lines)
    body = (chunk * (REQUEST // len(chunk) + 1))[:REQUEST]
    body = body[: body.rfind(b"\n") + 1]
    csv_bytes = len(transcode(body, len(body)).rows.text().encode())  # what one request adds to the window
    requests = max(1, -(-size // csv_bytes))
    WORKDIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=WORKDIR))
    out = workdir / "out"
    options = ["--format", "parquet", "--state-dir", str(workdir / "state"), "--interval", "24h", "--idle-close", "1s"]
    server, port = start_server(str(out), *options)
    try:
        started = time.perf_counter()
        for _ in range(requests):
            status, _, answer = post(port, body)
            if status != 200:
                raise SystemExit(f"{status}: {answer[:200]!r}")
        sent = time.perf_counter() - started
        # The idle close commits the window a second after the last request; then it waits for the
        # finish process until the Parquet file is in the output directory.
        while not list(out.rglob("*.parquet")) or backlog(port)["windows"]:
            time.sleep(0.1)  # polling the server's own count
        finished = time.perf_counter() - started
        peaks = {pid: vm_hwm_mib(pid) for pid in with_children(server.pid)}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
    try:
        import pyarrow.parquet as pq

        (parquet,) = out.rglob("*.parquet")
        rows = pq.read_metadata(parquet).num_rows
        expected = requests * body.count(b"\n")
        server_peak = peaks.pop(server.pid)
        print(
            f"{requests} x {len(body) / 2**20:.0f} MiB requests into one window ({requests * csv_bytes / 2**30:.2f} GiB "
            f"of CSV, {rows:,} rows): sent in {sent:.1f} s, in the output as Parquet {finished - sent:.1f} s later "
            f"({parquet.stat().st_size / 2**20:.0f} MiB); peak RSS: server {server_peak:.0f} MiB, finish process "
            f"{sum(peaks.values()):.0f} MiB, together {server_peak + sum(peaks.values()):.0f} MiB"
        )
        if rows != expected:
            raise SystemExit(f"{rows} rows in the Parquet file for {expected} sent")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
