"""Strict windows (`--align interval`) and --max-file-bytes through the real server: shuffled event
times over an hour, late events, idle close and SIGKILL with several windows open, rolling files."""

from __future__ import annotations

import json
import random

from batched_event_api.events.render import csv_record
from model import MINUTE
from polling import wait_for
from servers import Server, post_maybe_killed, run_cli
from snapshots import csv_files
from strict_model import StrictModel

HOUR_START = 1_719_799_200  # 2024-07-01T02:00:00Z
STRICT = ("--align", "interval", "--interval", "5m", "--idle-close", "1h")


def _text(seconds: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(seconds: int, i: int) -> tuple[bytes, tuple[int, bytes]]:
    """A request line and, for the model, its time (ns) and the CSV row the server writes."""
    text = _text(seconds)
    line = json.dumps({"time": text, "id": i}) + "\n"
    return line.encode(), (seconds * 10**9, csv_record([text, "", str(i), "false", "", "", "", "0"]).encode())


def _send(server, model: StrictModel | None, seconds: list[int], first_id: int = 0) -> None:
    lines, rows = zip(*(_event(s, first_id + i) for i, s in enumerate(seconds)), strict=True)
    assert server.post(b"".join(lines)).status_code == 200
    if model is not None:
        model.apply(list(rows))


def _rows_in_window(files: dict[str, bytes]) -> None:
    """Every file's rows lie in the window its name gives (a file's name bounds its rows)."""
    for name, data in files.items():
        start = name.removeprefix("user-events-")[:15]
        for row in data.decode().splitlines():
            stamp = (
                row[:19].replace("-", "").replace(":", "").replace("T", "-")
            )  # 2024-07-01T02:03:04 -> 20240701-020304
            assert stamp[:11] + f"{int(stamp[11:13]) // 5 * 5:02d}00" == start, (name, row)


def test_shuffled_times_over_an_hour_land_in_their_own_windows_with_a_cap_on_open_ones(server_factory):
    rng = random.Random(6)
    seconds = [HOUR_START + rng.randrange(3600) for _ in range(480)]  # shuffled over an hour: 12 windows
    server = server_factory(*STRICT, "--max-open-windows", "4")
    model = StrictModel(5 * MINUTE, max_open=4)
    for i in range(0, len(seconds), 40):
        _send(server, model, seconds[i : i + 40], first_id=i)
    status = json.loads(run_cli("status", "-o", str(server.output), "--json").stdout)
    assert 1 <= len(status["open_windows"]) <= 4
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files == model.close_all()
    assert sum(data.count(b"\n") for data in files.values()) == 480
    _rows_in_window(files)
    # The cap commits windows that get more events later: those go on in -1, -2, ... files.
    assert any(name.endswith("-1.csv") for name in files)


def test_a_late_event_reopens_its_window_as_a_new_file_that_the_watermark_does_not_close(server_factory):
    server = server_factory(*STRICT)
    model = StrictModel(5 * MINUTE)
    base = HOUR_START
    _send(server, model, [base + 60, base + 120])
    _send(server, model, [base + 600])  # 02:10: the watermark passes [02:00, 02:05): committed now
    assert list(csv_files(server.output)) == ["user-events-20240701-020000.csv"]
    _send(server, model, [base + 61])  # late: [02:00, 02:05) again, in a new file
    _send(server, model, [base + 1200])  # 02:20 commits 02:10, not the late file
    _send(server, model, [base + 62])  # joins the late file: late events do not cost a file each
    assert sorted(csv_files(server.output)) == ["user-events-20240701-020000.csv", "user-events-20240701-021000.csv"]
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files == model.close_all()
    assert files["user-events-20240701-020000-1.csv"].count(b"\n") == 2


def test_allowed_lateness_keeps_a_window_open_past_its_end(server_factory):
    server = server_factory(*STRICT, "--allowed-lateness", "5m")
    base = HOUR_START
    assert server.post(_event(base + 60, 0)[0] + _event(base + 360, 1)[0]).status_code == 200  # 02:01, 02:06
    assert server.post(_event(base + 180, 2)[0]).status_code == 200  # 02:03: its window is still open
    assert csv_files(server.output) == {}
    assert server.post(_event(base + 600, 3)[0]).status_code == 200  # 02:10 = 02:05 + 5m: committed
    assert csv_files(server.output)["user-events-20240701-020000.csv"].count(b"\n") == 2
    assert server.stop() == 0


def test_idle_close_commits_every_open_window(server_factory):
    server = server_factory("--align", "interval", "--interval", "5m", "--idle-close", "300ms")
    base = HOUR_START
    assert server.post(b"".join(_event(base + s, i)[0] for i, s in enumerate([1000, 10, 400, 20]))).status_code == 200
    names = {"user-events-20240701-020000.csv", "user-events-20240701-020500.csv", "user-events-20240701-021500.csv"}
    assert wait_for(lambda: set(csv_files(server.output)) == names)
    assert server.stop() == 0


def test_sigkill_with_several_windows_open_resumes_them(server_factory):
    options = (*STRICT, "--allowed-lateness", "30m")  # the watermark commits none of them
    server = server_factory(*options)
    model = StrictModel(5 * MINUTE, lateness=30 * MINUTE)
    base = HOUR_START
    _send(server, model, [base + 10, base + 700, base + 400, base + 20])
    server.kill()
    status = json.loads(run_cli("status", "-o", str(server.output), "--json").stdout)
    assert [w["start"] for w in status["open_windows"]] == [
        "2024-07-01T02:00:00Z",
        "2024-07-01T02:05:00Z",
        "2024-07-01T02:10:00Z",
    ]
    assert "open windows:      3" in run_cli("status", "-o", str(server.output)).stdout
    server = server_factory(*options, output=server.output)
    _send(server, model, [base + 30, base + 710, base + 410], first_id=4)  # each to its resumed window
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files == model.close_all()
    assert sorted(files) == [
        "user-events-20240701-020000.csv",
        "user-events-20240701-020500.csv",
        "user-events-20240701-021000.csv",
    ]


def test_max_file_bytes_rolls_a_window_into_numbered_files_between_rows(server_factory):
    server = server_factory(*STRICT, "--max-file-bytes", "200")
    model = StrictModel(5 * MINUTE, max_file_bytes=200)
    for i in range(4):
        _send(server, model, [HOUR_START + 10 * i + k for k in range(5)], first_id=5 * i)
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files == model.close_all()
    assert len(files) > 2 and all(len(data) <= 200 for data in files.values())
    assert sum(data.count(b"\n") for data in files.values()) == 20
    assert "user-events-20240701-020000-1.csv" in files


def test_the_per_request_window_cap_counts_distinct_windows(server_factory):
    server = server_factory(*STRICT, "--max-windows-per-request", "2")
    base = HOUR_START
    # Four events in two windows, back and forth: within the cap.
    body = b"".join(_event(base + s, i)[0] for i, s in enumerate([10, 400, 20, 410]))
    assert server.post(body).status_code == 200
    refused = server.post(body + _event(base + 900, 9)[0])
    assert refused.status_code == 413 and refused.json()["line"] == 5
    assert server.stop() == 0
    assert sum(data.count(b"\n") for data in csv_files(server.output).values()) == 4


def test_random_kills_with_several_windows_open_give_the_files_of_an_uninterrupted_run(server_factory, tmp_path):
    rng = random.Random(3)
    seconds = [HOUR_START + rng.randrange(3600) for _ in range(4000)]
    bodies, i = [], 0
    while i < len(seconds):
        n = rng.choice([1, 10, 40, 100])
        bodies.append(b"".join(_event(s, i + k)[0] for k, s in enumerate(seconds[i : i + n])))
        i += n
    options = (*STRICT, "--max-open-windows", "6", "--allowed-lateness", "10m", "--max-file-bytes", "20KB")

    clean = server_factory(*options, output=tmp_path / "clean")
    for body in bodies:
        assert clean.post(body).status_code == 200
    assert clean.stop() == 0
    expected = csv_files(clean.output)

    out = tmp_path / "crashy"
    server = server_factory(*options, output=out)
    kills, index = 0, 0
    while index < len(bodies):
        response, killed = post_maybe_killed(server, bodies[index], f"req-{index}", rng, chance=0.2)
        if response is not None:
            assert response.status_code == 200, response.text
            index += 1
        if server.proc.poll() is not None or killed:
            server.kill()
            kills += 1
            server = server_factory(*options, output=out)  # recover the open windows and carry on
    assert server.stop() == 0
    assert kills >= 10
    assert csv_files(out) == expected
    _rows_in_window(expected)
    assert all(len(data) <= 20_000 for data in expected.values())
    assert sum(data.count(b"\n") for data in expected.values()) == len(seconds)


def test_a_bucket_gets_the_strict_windows_through_a_sigkill_with_several_open(bucket, tmp_path):
    def serve() -> Server:
        state = ("--state-dir", str(tmp_path / "state"))
        return Server(
            bucket.url, *state, *STRICT, "--max-open-windows", "3", env=bucket.env(), log_dir=tmp_path
        ).start()

    rng = random.Random(8)
    model = StrictModel(5 * MINUTE, max_open=3)
    server = serve()
    for i in range(0, 200, 20):
        _send(server, model, [HOUR_START + rng.randrange(3600) for _ in range(20)], first_id=i)
    server.kill()  # with windows open in the state directory
    server = serve()
    for i in range(200, 400, 20):
        _send(server, model, [HOUR_START + rng.randrange(3600) for _ in range(20)], first_id=i)
    assert server.stop() == 0  # commits every open window and waits for the uploads
    objects, files = bucket.objects(), model.close_all()
    # The same files; their -N names may differ: a window's name is free again in the state
    # directory once its file is uploaded, and the bucket moves a taken name to the next free one.
    assert sorted(objects.values()) == sorted(files.values())
    assert {name[:27] for name in objects} == {name[:27] for name in files}  # user-events-YYYYMMDD-HHMMSS
    _rows_in_window(objects)
