"""Attacks on strict windows (`--align interval`) through the real server: refused requests that
would have moved the watermark or opened windows, Idempotency-Key replays across a SIGKILL with
several windows open, and a group of concurrent requests whose windows interleave."""

from __future__ import annotations

import datetime
import gzip
import json
import random
from concurrent.futures import ThreadPoolExecutor

import zstandard

from servers import run_cli
from snapshots import csv_files, sizes

HOUR_START = 1_719_799_200  # 2024-07-01T02:00:00Z
STRICT = ("--align", "interval", "--interval", "5m", "--idle-close", "1h")


def _line(seconds: int, i: int) -> bytes:
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"time": text, "id": i}).encode() + b"\n"


def _ids(files: dict[str, bytes]) -> list[int]:
    return sorted(int(row.split(b",")[2]) for data in files.values() for row in data.splitlines())


def _open_windows(server) -> list[str]:
    status = json.loads(run_cli("status", "-o", str(server.output), "--json").stdout)
    return [w["start"] for w in status["open_windows"]]


def test_refused_requests_over_several_windows_write_nothing_and_leave_the_watermark(server_factory):
    server = server_factory(*STRICT, "--max-windows-per-request", "3", "--allowed-lateness", "10m")
    base = HOUR_START
    assert server.post(_line(base + 10, 0) + _line(base + 400, 1)).status_code == 200  # 02:00, 02:05 open
    before = sizes(server.output)
    # Four windows, two of them open ones, and one far ahead that would commit both: 413.
    over_cap = b"".join(_line(base + s, 10 + i) for i, s in enumerate([20, 410, 86_400 * 365, 900]))
    assert server.post(over_cap).status_code == 413
    # Within the cap, far ahead, but its last line is bad: 400.
    bad_last = _line(base + 30, 20) + _line(base + 86_400 * 365, 21) + b'{"time": "not a time", "id": 22}\n'
    assert server.post(bad_last).status_code == 400
    assert sizes(server.output) == before
    # The watermark did not move: events for the open windows join them, no late (-1) file.
    assert server.post(_line(base + 40, 30) + _line(base + 420, 31)).status_code == 200
    assert server.stop() == 0
    files = csv_files(server.output)
    assert sorted(files) == ["user-events-20240701-020000.csv", "user-events-20240701-020500.csv"]
    assert _ids(files) == [0, 1, 30, 31]


def test_idempotency_keys_replay_across_a_sigkill_with_several_windows_open(server_factory):
    options = (*STRICT, "--max-open-windows", "3", "--allowed-lateness", "10m")
    server = server_factory(*options)
    rng = random.Random(22)
    bodies = []
    for r in range(12):
        seconds = [HOUR_START + rng.randrange(3600) for _ in range(6)]
        bodies.append(b"".join(_line(s, 6 * r + k) for k, s in enumerate(seconds)))
    for r, body in enumerate(bodies[:8]):
        assert server.post(body, headers={"Idempotency-Key": f"key-{r}"}).status_code == 200
    server.kill()
    assert 1 <= len(_open_windows(server)) <= 3
    server = server_factory(*options, output=server.output)
    for r, body in enumerate(bodies):  # every one again, after a restart: the first eight are replays
        response = server.post(body, headers={"Idempotency-Key": f"key-{r}"})
        assert response.status_code == 200
    server.kill()
    server = server_factory(*options, output=server.output)
    for r in range(0, 12, 3):  # and again after a second kill
        assert server.post(bodies[r], headers={"Idempotency-Key": f"key-{r}"}).status_code == 200
    assert server.stop() == 0
    assert _ids(csv_files(server.output)) == list(range(72))


def test_a_group_of_concurrent_requests_interleaving_windows_applies_each_once(server_factory):
    options = (*STRICT, "--max-open-windows", "4", "--max-file-bytes", "600")
    server = server_factory(*options)
    rng = random.Random(7)
    bodies = []
    for r in range(64):
        seconds = [HOUR_START + rng.randrange(3600) for _ in range(rng.choice([1, 5, 20]))]
        bodies.append(b"".join(_line(s, 100 * r + k) for k, s in enumerate(seconds)))
    sent = sorted(int(json.loads(line)["id"]) for body in bodies for line in body.splitlines())

    def post(r: int) -> int:
        return server.post(bodies[r], headers={"Idempotency-Key": f"g-{r}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(post, range(64))) == {200}
    server.kill()
    server = server_factory(*options, output=server.output)
    with ThreadPoolExecutor(16) as pool:  # all resent at once: every one a replay
        assert set(pool.map(post, range(64))) == {200}
    assert server.stop() == 0
    files = csv_files(server.output)
    assert _ids(files) == sent
    assert all(len(data) <= 600 or data.count(b"\n") == 1 for data in files.values())
    for name, data in files.items():  # every file's rows in the window its name gives
        minute = int(name[23:25])
        for row in data.splitlines():
            assert int(row[14:16]) // 5 * 5 == minute and row[11:13] == name[21:23].encode(), (name, row)


def test_a_restart_with_another_compress_and_interval_keeps_every_file_readable(server_factory):
    def rows(files) -> list[int]:
        ids = []
        for name, data in files.items():
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            elif name.endswith(".zst"):
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            ids += [int(row.split(b",")[2]) for row in data.splitlines()]
        return sorted(ids)

    first = server_factory(*STRICT, "--compress", "gzip", "--interval", "10m", "--allowed-lateness", "1h")
    assert first.post(_line(HOUR_START + 420, 0) + _line(HOUR_START + 60, 1)).status_code == 200
    first.kill()  # its 02:00 window (10m) open in gzip
    second = server_factory(*STRICT, "--compress", "none", output=first.output)
    assert second.post(_line(HOUR_START + 120, 2)).status_code == 200  # 02:00 of 5m windows
    assert second.stop() == 0
    files = {p.name: p.read_bytes() for p in sorted(first.output.glob("user-events-*"))}
    assert rows(files) == [0, 1, 2]
    plain = {name: data for name, data in files.items() if name.endswith(".csv")}
    assert list(plain.values()) == [b"2024-07-01T02:02:00Z,,2,false,,,,0\n"]


def test_events_at_the_edges_of_the_range_with_an_interval_not_dividing_a_day(server_factory):
    """1678 and 2262 under 7-minute windows: the first window starts in 1677, before the earliest
    accepted event; the server, `status` and a restart take it as any other."""
    options = (*STRICT, "--interval", "7m", "--allowed-lateness", "10000000h")  # 1141 years: none closes
    server = server_factory(*options)
    body = (
        b'{"time": "1678-01-01T00:00:00Z", "id": 1}\n'
        b'{"time": "2261-12-31T23:59:59.999999999Z", "id": 2}\n'
        b'{"time": "1678-01-01T00:02:59.5-00:01", "id": 3}\n'
    )
    assert server.post(body, headers={"Idempotency-Key": "edges"}).status_code == 200
    server.kill()
    status = run_cli("status", "-o", str(server.output), "--json")
    assert status.returncode == 0, status.stderr
    assert sorted(w["start"] for w in json.loads(status.stdout)["open_windows"]) == [
        "1677-12-31T23:57:00Z",
        "2261-12-31T23:58:00Z",
    ]
    assert run_cli("status", "-o", str(server.output)).returncode == 0
    server = server_factory(*options, output=server.output)
    assert server.post(body, headers={"Idempotency-Key": "edges"}).status_code == 200  # a replay
    assert server.stop() == 0
    files = csv_files(server.output)
    assert sorted(files) == ["user-events-16771231-235700.csv", "user-events-22611231-235800.csv"]
    assert _ids(files) == [1, 2, 3]
