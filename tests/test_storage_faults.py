"""Real storage faults on a small tmpfs: a full disk and a read-only filesystem give 503, lose
nothing acknowledged, write nothing of the refused request, and the service carries on after."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model import generate_events, model_files, ndjson
from polling import wait_for
from servers import AS_A_USER, assert_stops_holding
from snapshots import csv_files


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"this test needs to mount a tmpfs (root or CAP_SYS_ADMIN): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _post_until_the_disk_is_full(server, events: list[dict]) -> tuple[list[dict], list[dict], httpx.Response]:
    """Post the events 50 at a time until one request gets 503: the events accepted before it,
    the refused request's, and its answer."""
    accepted: list[dict] = []
    for i in range(0, len(events), 50):
        chunk = events[i : i + 50]
        response = server.post(ndjson(chunk))
        if response.status_code == 503:
            return accepted, chunk, response
        assert response.status_code == 200
        accepted.extend(chunk)
    raise AssertionError("the disk never filled up")


def test_full_disk_gives_503_and_recovers_when_space_returns(server_factory, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 200_000)
    out = small_disk / "out"
    server = server_factory(output=out)
    accepted, refused, response = _post_until_the_disk_is_full(server, generate_events(random.Random(3), 3000))
    assert "disk is full" in response.json()["error"]
    assert str(small_disk) not in response.text  # paths go to the log, not to clients
    readiness = server.client.get("/readyz")  # the next write would fail the same way
    assert readiness.status_code == 503 and "disk is full" in readiness.json()["error"]
    assert str(small_disk) not in readiness.text
    # Still full: refused again, nothing half-written.
    assert server.post(ndjson(refused)).status_code == 503
    filler.unlink()  # the cause goes away
    assert server.post(ndjson(refused)).status_code == 200
    accepted.extend(refused)
    assert server.client.get("/readyz").status_code == 200
    assert_stops_holding(server, accepted)


def test_unwritable_directory_gives_503_and_recovers(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory(output=out, wrapper=AS_A_USER)
    first = [{"time": "2024-07-01T02:03:04Z", "id": 1}, {"time": "2024-07-01T02:04:00Z", "id": 2}]
    second = [{"time": "2024-07-01T02:04:30Z", "id": 3}, {"time": "2024-07-01T02:09:00Z", "id": 4}]  # opens a file
    assert server.post(ndjson(first)).status_code == 200
    out.chmod(0o555)
    try:
        response = server.post(ndjson(second))
        assert response.status_code == 503
        assert "permission denied" in response.json()["error"]
        assert str(tmp_path) not in response.text
        readiness = server.client.get("/readyz")
        assert readiness.status_code == 503 and "not writable" in readiness.json()["error"]
    finally:
        out.chmod(0o755)
    # Probes try a recovery at most once a second (issue 19): ready again within that.
    assert wait_for(lambda: server.client.get("/readyz").status_code == 200)
    assert server.post(ndjson(second)).status_code == 200
    assert_stops_holding(server, first + second)


def test_readiness_probes_of_an_unhealthy_writer_try_a_recovery_at_most_once_a_second(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory("--idle-close", "300ms", output=out, wrapper=AS_A_USER)
    assert server.post(ndjson([{"time": "2024-07-01T02:03:04Z", "id": 1}])).status_code == 200
    out.chmod(0o555)  # the idle commit cannot publish the window: the writer needs a recovery
    try:
        assert wait_for(lambda: "idle commit failed, retrying" in server.log.read_text())
        failures_before = server.log.read_text().count("Permission denied")
        started = time.monotonic()
        statuses = [server.client.get("/readyz").status_code for _ in range(100)]
        elapsed = time.monotonic() - started
        recoveries = server.log.read_text().count("Permission denied") - failures_before
    finally:
        out.chmod(0o755)
    print(f"100 probes in {elapsed:.2f}s ran {recoveries} recoveries")
    assert statuses == [503] * 100
    assert recoveries <= elapsed + 2  # one a second at most, and the idle commit's own retry
    assert wait_for(lambda: server.client.get("/readyz").status_code == 200)
    assert server.stop() == 0


def test_a_failed_idle_commit_is_retried_without_a_new_request(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory("--idle-close", "300ms", output=out, wrapper=AS_A_USER)
    events = [{"time": "2024-07-01T02:03:04Z", "id": 1}]
    assert server.post(ndjson(events)).status_code == 200
    out.chmod(0o555)  # the idle commit cannot publish the window
    try:
        assert wait_for(lambda: "idle commit failed, retrying" in server.log.read_text())
        assert csv_files(out) == {}
    finally:
        out.chmod(0o755)
    assert wait_for(lambda: csv_files(out) == model_files(events))  # no request needed
    assert server.client.get("/readyz").status_code == 200


def test_after_a_crash_on_a_full_disk_the_server_starts_and_is_ready_once_space_returns(server_factory, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 200_000)
    out = small_disk / "out"
    server = server_factory(output=out)
    accepted, refused, _ = _post_until_the_disk_is_full(server, generate_events(random.Random(4), 3000))
    server.kill()  # a crash while the disk is full
    spare = small_disk / "spare"  # whatever room the crash left, taken too
    try:
        spare.write_bytes(b"x" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize))
    except OSError:
        pass
    server = server_factory(output=out)  # starts on the full disk (the start-up compaction waits)
    assert "could not compact the journal" in server.log.read_text()
    assert not (out / ".journal.tmp").exists()
    assert server.post(ndjson(refused)).status_code == 503
    filler.unlink()  # space returns: ready again without a request having to succeed first
    spare.unlink(missing_ok=True)
    assert wait_for(lambda: server.client.get("/readyz").status_code == 200)
    assert server.post(ndjson(refused)).status_code == 200
    accepted.extend(refused)
    assert_stops_holding(server, accepted)
