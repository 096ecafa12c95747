"""The fixtures: the real server as a subprocess, started on demand and killed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The helper modules' asserts say what failed, as the tests' own do (before they are imported).
pytest.register_assert_rewrite("rawhttp", "servers", "snapshots")

# Server for the fixture; the rest because test_s3.py imports them from here (until it imports them from their modules).
from paths import GOLDEN, SEED  # noqa: E402, F401
from polling import wait_for  # noqa: E402, F401
from servers import Server, post_maybe_killed  # noqa: E402, F401
from snapshots import csv_files  # noqa: E402, F401


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
