"""The real server as a subprocess over real HTTP, and the command line run as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from model import model_files
from snapshots import csv_files

NDJSON = {"content-type": "application/x-ndjson"}
CLI = [sys.executable, "-m", "batched_event_api"]  # `batched-event-api`, on this interpreter and source

# The address a server logs once it listens (text or JSON logs alike).
_SERVING = re.compile(rb"serving on http://127\.0\.0\.1:([0-9]+)")

# Root writes anywhere: without the capabilities that bypass permissions, a process of root's meets
# them as its owner would, wherever the clone is (a user like `nobody` may not even read it).
AS_A_USER = (
    ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0
    else []
)


class Server:
    """`batched-event-api serve` in a subprocess, writing to `output`: on a port it picks itself
    (`--port 0`, read from its log, so no other program can take it in between), or on `port`
    (a restart at the same address)."""

    def __init__(
        self,
        output: Path,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.output = output
        self.wrapper = wrapper or []
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.port = port or 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        # In pytest's tmp_path (pruned by pytest), beside the output unless told; one log per process.
        handle, name = tempfile.mkstemp(dir=log_dir or output.parent, prefix="server-", suffix=".log")
        os.close(handle)
        self.log = Path(name)

    def start(self) -> Server:
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, *CLI, "serve", "-o", str(self.output), "--port", str(self.port), *self.args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self.client is None and (serving := _SERVING.search(self.log.read_bytes())) is not None:
                self.port = int(serving.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
                self.client = httpx.Client(base_url=self.url, timeout=60)
            try:
                if self.client is not None and self.client.get("/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)  # polling for readiness, not synchronising on a guess
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/user/event") -> httpx.Response:
        assert self.client is not None, "start() it first"
        return self.client.post(path, content=body, headers={**NDJSON, **(headers or {})})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self._log_file.close()
        if self.client is not None:
            self.client.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def assert_stops_holding(server: Server, events: list[dict]) -> None:
    """The server stops cleanly and its files hold exactly these events (as the model writes them)."""
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(events)


def healthy(port: int) -> bool:
    """Does a server answer /healthz at this port now?"""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def post_maybe_killed(
    server: Server, body: bytes, key: str, rng: Any, *, chance: float = 0.35, within: float = 0.015
) -> tuple[httpx.Response | None, bool]:
    """Post with an Idempotency-Key; with probability `chance` a SIGKILL lands at a random instant
    within `within` seconds of the start: before, during or after the request. Returns the answer
    (None when the connection broke) and whether a kill was armed."""
    timer = None
    if rng.random() < chance:
        timer = threading.Timer(rng.uniform(0, within), server.proc.kill)  # type: ignore[union-attr]
        timer.start()
    try:
        response: httpx.Response | None = server.post(body, headers={"Idempotency-Key": key})
    except httpx.TransportError:
        response = None
    if timer is not None:
        timer.join()
    return response, timer is not None


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's memory from /proc/PID/status: VmRSS (now) or VmHWM (its peak), in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`batched-event-api ARGS` to its end: exit status, and stdout and stderr as text."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
