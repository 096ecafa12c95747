"""Real S3 API servers on loopback (moto's standalone server, and SeaweedFS: tests/seaweed.py),
buckets on them, and a TCP relay in front of one that a test cuts and restores to play a store
outage."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from seaweed import SeaweedServer, client

KEY_ID, SECRET = "AKIDTESTONLY", "s3cr3t-never-logged"


class MotoServer:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # loaded only when a test uses it

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.stop()


S3Server = MotoServer | SeaweedServer
S3_SERVERS = ("moto", "seaweedfs")  # what a test parametrises `s3` over to run against each


class S3Servers:
    """The S3 servers of a test session, each started on its first use and stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._started: dict[str, S3Server] = {}
        self._failed: dict[str, str] = {}  # a server that did not start is not tried again by every test

    def get(self, kind: str) -> S3Server:
        if kind in self._failed:
            raise RuntimeError(
                f"the {kind} server did not start: {self._failed[kind]} (the first test using it says more)"
            )
        if kind not in self._started:
            try:
                self._started[kind] = self._start(kind)
            except Exception as exc:
                self._failed[kind] = str(exc).partition("\n")[0]
                raise
        return self._started[kind]

    def _start(self, kind: str) -> S3Server:
        if kind == "moto":
            return MotoServer()
        if kind == "seaweedfs":
            return SeaweedServer(self.directory / kind, KEY_ID, SECRET).start()
        raise ValueError(f"no S3 server {kind!r}: one of {S3_SERVERS}")

    def stop(self) -> None:
        for server in self._started.values():
            server.stop()


class Bucket:
    """A fresh bucket, what a server needs in its environment to use it, and what it holds."""

    def __init__(self, endpoint: str, prefix: str = "events/") -> None:
        self.name = f"bea-{uuid.uuid4().hex[:12]}"
        self.prefix = prefix
        self.url = f"s3://{self.name}/{prefix}"
        self.client = client(endpoint, KEY_ID, SECRET)
        self.client.create_bucket(Bucket=self.name)
        self.endpoint = endpoint

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
        }

    def objects(self) -> dict[str, bytes]:
        """Every object under the prefix, by name (as csv_files gives a directory's files)."""
        return {name: self.read(name) for name in self.names()}

    def names(self) -> list[str]:
        """The objects under the prefix, sorted."""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=self.prefix):
            out += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(out)

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=self.prefix + name)["Body"].read()

    def head(self, name: str) -> dict:
        return self.client.head_object(Bucket=self.name, Key=self.prefix + name)

    def remove(self) -> None:
        """The bucket and everything in it (a session's servers would hold every test's objects)."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                self.client.delete_objects(Bucket=self.name, Delete={"Objects": keys})
        self.client.delete_bucket(Bucket=self.name)


@contextlib.contextmanager
def fresh_bucket(server: S3Server, tmp_path: Path) -> Iterator[Bucket]:
    """A bucket for one test, removed after it; SeaweedFS's log lines of the test go to its
    tmp_path (kept when the test fails)."""
    offset = server.log.stat().st_size if isinstance(server, SeaweedServer) else 0
    bucket = Bucket(server.endpoint)
    try:
        yield bucket
    finally:
        if isinstance(server, SeaweedServer):
            with open(server.log, "rb") as log:
                log.seek(offset)
                (tmp_path / "weed.log").write_bytes(log.read())
        bucket.remove()


class Relay:
    """Forwards TCP connections to the store; cut() drops every connection and refuses new ones
    until restore()."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._open = threading.Event()
        self._open.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused = 0  # connections turned away while cut: the faults that landed
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._open.set()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if not self._open.is_set():
                self.refused += 1
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
