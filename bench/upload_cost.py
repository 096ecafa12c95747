"""What uploading costs ingest: W1's bodies (400 events each, a window every request or so) sent to
the real server with local output, then with a bucket as output four ways: its store down (uploads
fail and back off), a store that answers every request at once (a stub on loopback: what the
uploads cost the service alone), and moto's S3 server at nice 19 and at nice 0 (as an equal of
the service for these cores). For each: the ingest rate, the CPU time of the server and its
upload process, the windows uploaded while the requests were sent, and the CPU each of those
cost over local output.

    .venv/bin/python bench/upload_cost.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import bench


def cpu_seconds(pid: int) -> float:
    """CPU time of the server and of its upload process."""
    total = 0
    for process in bench.with_children(pid):
        fields = open(f"/proc/{process}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def uploads(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return int(
        sum(
            float(v)
            for result, v in re.findall(r'^bea_uploads_total\{result="(\w+)"\} (\S+)$', text, re.M)
            if result != "failed"
        )
    )


def ingest(bodies: list[bytes], bucket: bench.Bucket | None) -> tuple[float, float, int]:
    with bench.served("always", 0, bucket) as server:
        before = cpu_seconds(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        started = time.perf_counter()
        for body in bodies:
            conn.request("POST", "/user/event", body=body, headers={"Content-Type": "application/x-ndjson"})
            conn.getresponse().read()
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - before
        done = uploads(server.port) if bucket else 0
        return 400 * len(bodies) / elapsed, cpu, done


async def _answer_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every request read whole and answered 200 with an ETag, nothing kept."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "stub"\r\n\r\n')
    writer.close()


async def _serve_stub(port: int) -> None:
    server = await asyncio.start_server(_answer_at_once, "127.0.0.1", port)
    await server.serve_forever()


@contextlib.contextmanager
def stub_store() -> Iterator[bench.Bucket]:
    port = bench.free_port()
    proc = subprocess.Popen(["nice", "-n", "19", sys.executable, __file__, "--stub", str(port)])
    try:
        bench._wait_healthy(port)  # the stub answers any request
        yield bench.Bucket(f"http://127.0.0.1:{port}")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    bench.WORKDIR.mkdir(parents=True, exist_ok=True)
    lines, _ = bench.generate(400 * 600, random.Random(1), 1_720_000_000 * 10**9)
    bodies = [b"".join(lines[i : i + 400]) for i in range(0, len(lines), 400)]
    ways = [
        ("bucket, store down", lambda: contextlib.nullcontext(bench.Bucket(f"http://127.0.0.1:{bench.free_port()}"))),
        ("bucket, a store that answers at once", stub_store),
        ("bucket on moto at nice 19", lambda: bench.bucket_server(19)),
        ("bucket on moto at nice 0", lambda: bench.bucket_server(0)),
    ]
    try:
        rate, local_cpu, _ = ingest(bodies, None)
        print(f"local output: {rate:,.0f} events/s, CPU {local_cpu:.2f} s")
        for name, store in ways:
            with store() as bucket:
                rate, cpu, done = ingest(bodies, bucket)
            cost = f", {(cpu - local_cpu) / done * 1000:.2f} ms of CPU each over local output" if done else ""
            print(
                f"{name}: {rate:,.0f} events/s, CPU {cpu:.2f} s (server and upload process), {done} windows uploaded "
                f"meanwhile{cost}"
            )
    finally:
        for workdir in bench.FINISHED:
            bench.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stub"]:
        asyncio.run(_serve_stub(int(sys.argv[2])))
    else:
        main()
