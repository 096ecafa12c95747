"""Peak server memory for large requests: `python bench/memory.py 256MiB` (or a byte count) posts
one body of about that size; `python bench/memory.py 28MB --concurrent 16 --max-pending 64MiB`
posts 16 at once against that pending-bytes budget.

Starts the real server and prints its resident memory when idle and at its peak (VmHWM). With
--concurrent, every answer must be 200, or 503 with Retry-After, and the rows on disk must be
exactly those of the 200s.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from bench import WORKDIR, generate, peak_rss_mib, start_server

UNITS = {"": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str) -> int:
    digits = "".join(c for c in text if c.isdigit())
    return int(digits) * UNITS[text[len(digits) :].lower()]


def post(port: int, body: bytes) -> tuple[int, str | None, bytes]:
    """(status, Retry-After, answer); status 0 when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/user/event", body=body, headers={"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        return response.status, response.getheader("retry-after"), response.read()
    except OSError as exc:
        return 0, None, str(exc).encode()
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", nargs="?", default="256MiB", help="bytes per request body")
    parser.add_argument("--concurrent", type=int, default=1, help="requests sent at once")
    parser.add_argument("--max-pending", default=None, help="the server's --max-pending (default: its own)")
    args = parser.parse_args()
    size = parse_size(args.size)
    lines, _ = generate(20_000, random.Random(1), 1_720_000_000 * 10**9)
    chunk = b"".join(lines)
    body = (chunk * (size // len(chunk) + 1))[:size]
    body = body[: body.rfind(b"\n") + 1]
    rows_per_body = body.count(b"\n")
    WORKDIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=WORKDIR))
    limit = str(len(body) + 1)
    options = ["--max-body", limit, "--max-pending", args.max_pending or str(max(len(body) + 1, 256 * 2**20))]
    server, port = start_server(workdir / "out", *options)
    try:
        idle = peak_rss_mib(server.pid)
        answers: list[tuple[int, str | None, bytes]] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda: answers.append(post(port, body))) for _ in range(args.concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        peak = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    try:
        statuses = collections.Counter(status for status, _, _ in answers)
        rows = sum(p.read_bytes().count(b"\n") for p in (workdir / "out").glob("*.csv"))
        bad = [a for a in answers if a[0] not in (200, 503) or (a[0] == 503 and a[1] is None)]
        print(
            f"{args.concurrent} x {len(body) / 1e6:.0f} MB bodies, server {' '.join(options)}: "
            f"{statuses[200]} answered 200, {statuses[503]} answered 503 + Retry-After, in {elapsed:.1f}s; "
            f"rows on disk {rows:,} (the 200s' rows: {statuses[200] * rows_per_body:,}); "
            f"server RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB"
        )
        if bad or rows != statuses[200] * rows_per_body:
            raise SystemExit(f"wrong outcome: {bad[:3]} / rows {rows} != {statuses[200] * rows_per_body}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
