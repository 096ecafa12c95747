"""The fixtures: the real server as a subprocess, started on demand and killed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from s3store import Bucket, S3Server, S3Servers

# The helper modules' asserts say what failed, as the tests' own do (before they are imported).
pytest.register_assert_rewrite("rawhttp", "servers", "snapshots")

from servers import Server  # noqa: E402  # after the assert rewrite is registered


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
