"""Service behaviours around windows: idle commit, signals, resumed windows, never overwriting."""

from __future__ import annotations

import shlex
import signal
import time

import pytest

from paths import ROOT
from polling import wait_for
from servers import run_cli
from snapshots import csv_files

EVENT = '{"time":"%s","id":%d}\n'


def _body(*times: str) -> bytes:
    return "".join(EVENT % (t, i) for i, t in enumerate(times)).encode()


def test_idle_timeout_commits_the_open_window(server_factory):
    server = server_factory("--idle-close", "300ms")
    assert server.post(_body("2024-07-01T02:03:04Z", "2024-07-01T02:03:05Z")).status_code == 200
    assert wait_for(lambda: "user-events-20240701-020304.csv" in csv_files(server.output))
    # A later event in the same event-time range starts a new file: the committed one never changes.
    assert server.post(_body("2024-07-01T02:03:06Z")).status_code == 200
    assert server.stop() == 0
    files = csv_files(server.output)
    assert files["user-events-20240701-020304.csv"].count(b"\n") == 2
    assert files["user-events-20240701-020306.csv"].count(b"\n") == 1


def test_sigint_commits_like_sigterm(server_factory):
    server = server_factory()
    assert server.post(_body("2024-07-01T02:03:04+02:00")).status_code == 200
    assert csv_files(server.output) == {}
    assert server.stop(signal.SIGINT) == 0
    # Named from the window start in UTC, rendered in the event's own offset.
    assert csv_files(server.output) == {"user-events-20240701-000304.csv": b"2024-07-01T02:03:04+02:00,,0,false,,,,0\n"}


def test_existing_file_is_never_overwritten(server_factory, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "user-events-20240701-020304.csv").write_bytes(b"someone else's\n")
    (out / "user-events-20240701-020304-1.csv").write_bytes(b"and another\n")
    server = server_factory(output=out)
    assert server.post(_body("2024-07-01T02:03:04Z")).status_code == 200
    assert server.stop() == 0
    files = csv_files(out)
    assert files["user-events-20240701-020304.csv"] == b"someone else's\n"
    assert files["user-events-20240701-020304-1.csv"] == b"and another\n"
    assert files["user-events-20240701-020304-2.csv"] == b"2024-07-01T02:03:04Z,,0,false,,,,0\n"


def test_restart_resumes_the_open_window(server_factory, tmp_path):
    out = tmp_path / "out"
    first = server_factory(output=out)
    assert first.post(_body("2024-07-01T02:03:04Z")).status_code == 200
    first.kill()  # no graceful commit: the window stays open on disk
    assert csv_files(out) == {}
    second = server_factory(output=out)
    assert second.post(_body("2024-07-01T02:07:00Z", "2024-07-01T02:08:04Z")).status_code == 200
    assert second.stop() == 0
    files = csv_files(out)
    assert list(files) == ["user-events-20240701-020304.csv", "user-events-20240701-020804.csv"]
    assert files["user-events-20240701-020304.csv"].count(b"\n") == 2


def test_header_option_writes_a_header_row(server_factory):
    server = server_factory("--header")
    assert server.post(_body("2024-07-01T02:03:04Z", "2024-07-01T02:09:00Z")).status_code == 200
    assert server.stop() == 0
    for content in csv_files(server.output).values():
        assert content.startswith(b"time,uuid,id,active,email,phone,description,credits\n")
        assert content.count(b"\n") == 2


@pytest.mark.parametrize(
    "first, then", [([], ["--header"]), (["--header"], [])], ids=["header-added", "header-dropped"]
)
def test_a_directory_is_not_served_with_and_without_a_header_row(server_factory, tmp_path, first, then):
    out = tmp_path / "out"
    server = server_factory(*first, output=out)
    assert server.post(_body("2024-07-01T02:03:04Z")).status_code == 200
    assert server.stop() == 0
    before = csv_files(out)
    refused = run_cli("serve", "-o", str(out), "--port", "0", *then)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert f"cannot serve from {out} {'with' if then else 'without'} --header" in refused.stderr
    assert csv_files(out) == before
    server = server_factory(*first, output=out)  # as before: served
    assert server.stop() == 0


def test_aligned_windows(server_factory):
    server = server_factory("--align", "interval")
    assert server.post(_body("2024-07-01T02:03:04Z", "2024-07-01T02:04:59Z", "2024-07-01T02:05:00Z")).status_code == 200
    assert server.stop() == 0
    files = csv_files(server.output)
    # Windows [02:00, 02:05) and [02:05, 02:10), each file named after its window's start, as
    # readers of time-partitioned output expect.
    assert {k: v.count(b"\n") for k, v in files.items()} == {
        "user-events-20240701-020000.csv": 2,
        "user-events-20240701-020500.csv": 1,
    }


def test_an_aligned_window_holds_only_its_own_events_and_the_readme_says_so(server_factory):
    server = server_factory("--align", "interval")
    # 01:40 comes while [02:00, 02:05) is open: strict windows put it in its own window's file.
    assert server.post(_body("2024-07-01T02:03:04Z", "2024-07-01T01:40:00Z", "2024-07-01T02:05:00Z")).status_code == 200
    assert server.stop() == 0
    files = csv_files(server.output)
    assert sorted(files) == [
        "user-events-20240701-014000.csv",
        "user-events-20240701-020000.csv",
        "user-events-20240701-020500.csv",
    ]
    assert b"2024-07-01T01:40:00Z," in files["user-events-20240701-014000.csv"]
    assert b"01:40" not in files["user-events-20240701-020000.csv"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`interval` (strict: window *k* holds exactly the events in [k·interval, (k+1)·interval)" in readme


def test_idempotency_key_replays_without_writing_even_after_a_restart(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory(output=out)
    body = _body("2024-07-01T02:03:04Z", "2024-07-01T02:03:05Z")
    key = {"Idempotency-Key": "batch-0001"}
    assert server.post(body, key).json() == {"accepted": 2}
    assert server.post(body, key).json() == {"accepted": 2, "replay": True}
    server.kill()
    server = server_factory(output=out)
    assert server.post(body, key).json() == {"accepted": 2, "replay": True}
    assert server.post(body, {"Idempotency-Key": "batch-0002"}).json() == {"accepted": 2}
    assert server.stop() == 0
    assert [c.count(b"\n") for c in csv_files(out).values()] == [4]


def test_one_request_spanning_thousands_of_windows(server_factory):
    server = server_factory("--max-windows-per-request", "3000")  # above the default limit of 1,000
    # 3,000 events ten minutes apart: 3,000 windows, more than many systems let a process hold open.
    start = 1_719_799_384
    body = "".join(EVENT % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 600 * i)), i) for i in range(3000))
    assert server.post(body.encode()).json() == {"accepted": 3000}
    assert server.stop() == 0
    files = csv_files(server.output)
    assert len(files) == 3000 and all(content.count(b"\n") == 1 for content in files.values())


def test_a_second_server_on_the_same_directory_is_refused_clearly(server_factory):
    server = server_factory()
    result = run_cli("serve", "-o", str(server.output), "--port", "0")
    assert result.returncode == 1
    assert "in use by another batched-event-api" in result.stderr and "Traceback" not in result.stderr
    assert server.client.get("/healthz").status_code == 200


def test_a_window_recovered_after_a_crash_is_committed_by_the_idle_timer(server_factory, tmp_path):
    out = tmp_path / "out"
    first = server_factory("--idle-close", "300ms", output=out)
    assert first.post(_body(*["2024-07-01T02:03:0%dZ" % i for i in range(5)])).status_code == 200
    first.kill()
    assert csv_files(out) == {}
    server_factory("--idle-close", "300ms", output=out)  # no request after the restart
    assert wait_for(lambda: "user-events-20240701-020300.csv" in csv_files(out))
    assert csv_files(out)["user-events-20240701-020300.csv"].count(b"\n") == 5


# -- issue 19: --interval bounds, `send` and the bearer token ----------------------------------


@pytest.mark.parametrize("interval", ["169h", "500ms"])
def test_an_interval_outside_its_bounds_is_refused_in_one_line(tmp_path, interval):
    given = run_cli("serve", "-o", str(tmp_path / "out"), "--port", "0", "--interval", interval)
    assert given.returncode == 2
    assert "Invalid value for '--interval'" in given.stderr and "168h" in given.stderr
    assert not (tmp_path / "out").exists()


def test_the_longest_interval_is_served(server_factory):
    server = server_factory("--interval", "168h")
    assert server.post(_body("2024-07-01T00:00:00Z", "2024-07-07T23:59:59Z", "2024-07-08T00:00:00Z")).json() == {
        "accepted": 3
    }
    assert server.stop() == 0
    assert [c.count(b"\n") for c in csv_files(server.output).values()] == [2, 1]


def test_send_never_prints_the_token_and_its_resume_command_works_with_the_token_from_the_environment(
    server_factory, tmp_path
):
    token = "s3cret-token-19"
    server = server_factory("--auth-token", token)
    path = tmp_path / "events.ndjson"
    good = [EVENT % ("2024-07-01T02:03:%02dZ" % i, i) for i in range(30)]
    path.write_text("".join(good[:20]) + '{"time":"2024-07-01T02:03:04Z","id":"x"}\n' + "".join(good[20:]))
    failed = run_cli(
        "send", "--no-progress", "--url", server.url, "--batch-lines", "10", "--auth-token", token, str(path)
    )
    assert failed.returncode == 1
    assert token not in failed.stdout + failed.stderr
    assert "BEA_AUTH_TOKEN" in failed.stderr and "--auth-token-file" in failed.stderr
    resume = failed.stderr.split("to resume without duplicates, run again with the same key prefix:\n", 1)[1]
    resume = resume.splitlines()[0].strip()
    assert "--auth-token" not in resume and resume.startswith("batched-event-api send --key-prefix ")
    path.write_text("".join(good))  # the bad line fixed
    resumed = run_cli(*shlex.split(resume)[1:], env={"BEA_AUTH_TOKEN": token})
    assert resumed.returncode == 0, resumed.stderr
    assert "sent 10 events" in resumed.stdout and "20 events in 2 requests were already applied" in resumed.stdout
    assert token not in resumed.stdout + resumed.stderr
    assert server.stop() == 0
    assert [c.count(b"\n") for c in csv_files(server.output).values()] == [30]


def test_send_reads_the_token_from_a_file(server_factory, tmp_path):
    server = server_factory("--auth-token", "from-a-file")
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    path = tmp_path / "events.ndjson"
    path.write_text(EVENT % ("2024-07-01T02:03:04Z", 1))
    sent = run_cli("send", "--no-progress", "--url", server.url, "--auth-token-file", str(token_file), str(path))
    assert sent.returncode == 0, sent.stderr
    assert "sent 1 event " in sent.stdout


@pytest.mark.parametrize("command", ["serve", "send"])
def test_auth_token_help_warns_that_the_command_line_is_visible_and_points_at_the_other_forms(command):
    shown = " ".join(run_cli(command, "--help").stdout.split())
    assert "visible to other users in ps" in shown
    assert "BEA_AUTH_TOKEN" in shown and "--auth-token-file" in shown
