"""Shared fixtures: the golden data, and the real server as a subprocess over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from s3store import Bucket, S3Server, S3Servers

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"  # the reference's own output and rendering vectors
SEED = ROOT / "examples"  # the sample datasets the README sends
NDJSON = {"content-type": "application/x-ndjson"}


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
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "batched_event_api",
                "serve",
                "-o",
                str(self.output),
                "--port",
                str(self.port),
                *self.args,
            ],
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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def make(*args: str, output: Path | None = None, **options: Any) -> Server:
        server = Server(output or tmp_path / "out", *args, log_dir=tmp_path, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


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


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    """Poll until predicate() is true (a condition, not a guessed delay); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def csv_files(directory: Path) -> dict[str, bytes]:
    """The committed files of a directory (what a `*.csv` reader sees), by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.csv"))}


# S3 servers on loopback (tests/s3store.py), loaded and started only for the tests that use them.
@pytest.fixture(scope="session")
def s3_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Servers]:
    from s3store import S3Servers

    servers = S3Servers(tmp_path_factory.mktemp("s3"))
    yield servers
    servers.stop()


@pytest.fixture
def s3(request: pytest.FixtureRequest, s3_servers: S3Servers) -> S3Server:
    """A test's S3 server: moto's, or each of s3store.S3_SERVERS for a test parametrised over them
    (`@pytest.mark.parametrize("s3", S3_SERVERS, indirect=True)`)."""
    return s3_servers.get(getattr(request, "param", "moto"))


@pytest.fixture
def bucket(s3: S3Server, tmp_path: Path) -> Iterator[Bucket]:
    from s3store import fresh_bucket

    with fresh_bucket(s3, tmp_path) as bucket:
        yield bucket
