"""Peak server memory for one large request: `python bench/memory.py 256MiB` (or a byte count).

Starts the real server, posts one body of about that size (seed-shaped events), and prints the
server's resident memory before and at its peak (VmHWM).
"""

from __future__ import annotations

import http.client
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import WORKDIR, generate, peak_rss_mib, start_server

UNITS = {"": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str) -> int:
    digits = "".join(c for c in text if c.isdigit())
    return int(digits) * UNITS[text[len(digits):].lower()]


def main() -> None:
    size = parse_size(sys.argv[1] if len(sys.argv) > 1 else "256MiB")
    lines, _ = generate(20_000, random.Random(1), 1_720_000_000 * 10**9)
    chunk = b"".join(lines)
    body = (chunk * (size // len(chunk) + 1))[:size]
    body = body[: body.rfind(b"\n") + 1]
    WORKDIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=WORKDIR))
    server, port = start_server(workdir / "out", "--max-body", str(len(body) + 1))
    try:
        idle = peak_rss_mib(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        started = time.perf_counter()
        conn.request("POST", "/user/event", body=body, headers={"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        print(f"body {len(body) / 2**20:.0f} MiB: HTTP {response.status} {answer.decode()} in {elapsed:.1f}s; "
              f"server RSS idle {idle:.0f} MiB, peak {peak_rss_mib(server.pid):.0f} MiB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
