"""What uploading costs ingest: W1's bodies (400 events each) sent to the real server three ways —
local output, a bucket whose store is down (uploads fail and back off), and a bucket on moto's S3
server — with the ingest rate and the server's CPU time for each.

    .venv/bin/python bench/upload_cost.py
"""

from __future__ import annotations

import http.client
import os
import random
import time

import bench


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(bodies: list[bytes], events: int, bucket: bench.Bucket | None) -> tuple[float, float]:
    with bench.served("always", 0, bucket) as server:
        before = cpu_seconds(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        started = time.perf_counter()
        for body in bodies:
            conn.request("POST", "/user/event", body=body, headers={"Content-Type": "application/x-ndjson"})
            conn.getresponse().read()
        elapsed = time.perf_counter() - started
        return events / elapsed, cpu_seconds(server.pid) - before


def main() -> None:
    bench.WORKDIR.mkdir(parents=True, exist_ok=True)
    lines, _ = bench.generate(400 * 600, random.Random(1), 1_720_000_000 * 10**9)
    bodies = [b"".join(lines[i : i + 400]) for i in range(0, len(lines), 400)]
    try:
        runs = [("local output", None), ("bucket, store down", bench.Bucket(f"http://127.0.0.1:{bench.free_port()}"))]
        for name, bucket in runs:
            rate, cpu = ingest(bodies, len(lines), bucket)
            print(f"{name}: {rate:,.0f} events/s, server CPU {cpu:.2f} s")
        with bench.bucket_server() as bucket:
            rate, cpu = ingest(bodies, len(lines), bucket)
            print(f"bucket on moto: {rate:,.0f} events/s, server CPU {cpu:.2f} s")
    finally:
        for workdir in bench.FINISHED:
            bench.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
