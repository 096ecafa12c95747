"""Replays of the reference's own workloads against the real server: byte-identical files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paths import GOLDEN, SEED
from snapshots import csv_files


def _per_second(start: datetime, end: datetime) -> bytes:
    """The reference test's payload: an event every second in [start, end), only `time` set."""
    lines = []
    t = start
    while t < end:
        lines.append('{"time":"%s"}\n' % t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        t += timedelta(seconds=1)
    return "".join(lines).encode()


def test_reference_example_two_requests_three_files(server_factory):
    server = server_factory()
    day = datetime(2024, 7, 1, tzinfo=UTC)
    first = _per_second(day.replace(hour=2, minute=3, second=4), day.replace(hour=2, minute=11, second=5))
    second = _per_second(day.replace(hour=2, minute=12, second=6), day.replace(hour=2, minute=15, second=7))
    assert server.post(first).json() == {"accepted": 481}
    assert server.post(second).json() == {"accepted": 181}
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files == csv_files(GOLDEN / "example")
    assert [f.count(b"\n") for f in files.values()] == [300, 239, 123]


def test_seed_datasets(server_factory):
    server = server_factory()
    for name in ("initial-dataset-01.ndjson", "initial-dataset-02.ndjson"):
        assert server.post((SEED / name).read_bytes()).status_code == 200
    assert server.stop() == 0
    assert csv_files(server.output) == csv_files(GOLDEN / "seed-datasets")


def test_tricky_requests(server_factory):
    server = server_factory()
    requests = sorted((GOLDEN / "tricky" / "requests").glob("*.ndjson"))
    assert len(requests) == 10
    for path in requests:
        response = server.post(path.read_bytes())
        assert response.status_code == 200, response.text
    assert server.stop() == 0
    assert csv_files(server.output) == csv_files(GOLDEN / "tricky" / "expected")


def test_no_in_progress_file_is_visible_before_commit(server_factory):
    server = server_factory()
    assert server.post((SEED / "initial-dataset-01.ndjson").read_bytes()).status_code == 200
    visible = csv_files(server.output)
    # The first window was closed by a later event; the second is still open and hidden.
    assert list(visible) == ["user-events-20240707-003609.csv"]
    assert (
        visible["user-events-20240707-003609.csv"]
        == (GOLDEN / "seed-datasets" / "user-events-20240707-003609.csv").read_bytes()
    )
    assert not list(server.output.glob("*.csv*"))[1:]
