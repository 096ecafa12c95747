"""Running it: health, readiness, metrics, OpenAPI, logs, the send command and file options."""

from __future__ import annotations

import gzip
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model import generate_events, model_files, ndjson
from paths import ROOT, SEED
from polling import wait_for
from rawhttp import connect
from servers import AS_A_USER, CLI, assert_stops_holding, run_cli
from snapshots import csv_files


def _metrics(server) -> dict[tuple[str, tuple], float]:
    text = server.client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_readiness_and_docs(server_factory):
    server = server_factory()
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"status": "ready"}
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    document = server.client.get("/openapi.json").json()
    assert set(document["paths"]) == {"/user/event", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
    ingest = document["paths"]["/user/event"]["post"]
    assert "application/x-ndjson" in ingest["requestBody"]["content"]
    assert {"200", "400", "405", "413", "415", "503"} <= set(ingest["responses"])


@pytest.mark.parametrize("token", [False, True], ids=["no-token", "token"])
def test_docs_ask_for_a_token_only_when_one_is_configured(server_factory, token):
    server = server_factory(*(["--auth-token", "s3cret-token"] if token else []))
    text = server.client.get("/openapi.json").text
    # Swagger UI draws a lock on each operation with `security`: none without a token.
    assert ('"security"' in text) is token and ("securitySchemes" in text) is token
    assert ('"401"' in text) is token


def test_metrics_of_a_local_output_list_no_upload_metrics(server_factory):
    server = server_factory()
    text = server.client.get("/metrics").text
    assert "bea_events_accepted_total" in text and "bea_upload" not in text


def test_metrics_count_what_happened(server_factory):
    server = server_factory()
    first = ndjson([{"time": "2024-07-01T02:03:04Z"}, {"time": "2024-07-01T02:03:01Z"}])  # one late event
    assert server.post(first, {"Idempotency-Key": "a"}).status_code == 200
    assert server.post(first, {"Idempotency-Key": "a"}).json()["replay"] is True
    assert server.post(ndjson([{"time": "2024-07-01T02:09:00Z"}] * 3)).status_code == 200  # commits a window
    assert server.post(b"{", {}).status_code == 400
    m = _metrics(server)
    assert m[("bea_events_accepted_total", ())] == 5
    assert m[("bea_late_events_total", ())] == 1
    assert m[("bea_windows_committed_total", ())] == 1
    assert m[("bea_idempotent_replays_total", ())] == 1
    assert (
        m[("bea_request_bytes_total", ())] == 2 * len(first) + len(ndjson([{"time": "2024-07-01T02:09:00Z"}] * 3)) + 1
    )
    assert m[("bea_requests_total", (("route", "/user/event"), ("status", "200")))] == 3
    assert m[("bea_requests_total", (("route", "/user/event"), ("status", "400")))] == 1
    assert m[("bea_open_window_rows", ())] == 3
    assert m[("bea_open_window_start_seconds", ())] == 1719799740  # 2024-07-01T02:09:00Z
    assert m[("bea_request_duration_seconds_count", (("route", "/user/event"),))] == 4


def test_json_logs_have_access_and_commit_lines_and_no_payloads(server_factory):
    server = server_factory("--log-format", "json")
    secret = "very-personal-description-7731"
    assert (
        server.post(ndjson([{"time": "2024-07-01T02:03:04Z", "description": secret, "email": "x@y.z"}])).status_code
        == 200
    )
    assert server.post(b'{"time":"nope","description":"%s"}\n' % secret.encode()).status_code == 400
    assert server.stop() == 0
    text = server.log.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = [e for e in entries if e.get("path") == "/user/event"]
    assert [(e["method"], e["status"], e["events"]) for e in access] == [("POST", 200, 1), ("POST", 400, 0)]
    assert all(e["bytes"] >= 0 and e["duration_ms"] >= 0 for e in access)
    assert any("committed user-events-20240701-020304.csv rows=1" in e["message"] for e in entries)
    assert secret not in text and "x@y.z" not in text


def test_no_access_log_keeps_the_commit_lines(server_factory):
    server = server_factory("--log-format", "json", "--no-access-log")
    assert server.post(ndjson([{"time": "2024-07-01T02:03:04Z"}])).status_code == 200
    assert server.stop() == 0
    entries = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    assert not [e for e in entries if e.get("path") == "/user/event"]
    assert any("committed user-events-20240701-020304.csv rows=1" in e["message"] for e in entries)


def test_compressed_files(server_factory):
    server = server_factory("--compress", "gzip", "--header")
    events = generate_events(random.Random(5), 400)
    for i in range(0, 400, 37):
        assert server.post(ndjson(events[i : i + 37])).status_code == 200
    visible_before = sorted(p.name for p in server.output.glob("*.csv*"))
    assert all(name.endswith(".csv.gz") for name in visible_before)
    assert server.stop() == 0
    files = {p.name: p.read_bytes() for p in sorted(server.output.glob("*.csv.gz"))}
    expected = model_files(events)
    header = b"time,uuid,id,active,email,phone,description,credits\n"
    assert {name.removesuffix(".gz"): gzip.decompress(data) for name, data in files.items()} == {
        name: header + content for name, content in expected.items()
    }
    assert set(visible_before) < set(files)  # only committed files were ever visible
    assert not list(server.output.glob("*.csv"))


def _send(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "send", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sent(*args: str) -> str:
    """The summary line of a `send` run that must succeed."""
    proc = _send(*args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_send_spreads_chunks_over_several_servers_and_fails_over_when_one_is_down(server_factory, tmp_path):
    first = server_factory(output=tmp_path / "a")
    second = server_factory(output=tmp_path / "b")
    with socket.socket() as dead:  # a port nothing listens on: its chunks go to the next server
        dead.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    events = [{"time": "2024-07-01T02:03:%02dZ" % (i % 60), "id": i} for i in range(900)]
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(events))
    out = _sent("--url", first.url, "--url", dead_url, "--url", second.url, "--batch-lines", "100", str(path))
    assert "sent 900 events" in out
    assert first.stop() == 0 and second.stop() == 0
    rows = {
        name: content.decode().splitlines()
        for o in (first, second)
        for name, content in ((f"{o.output.name}/{n}", c) for n, c in csv_files(o.output).items())
    }
    ids = sorted(int(line.split(",")[2]) for lines in rows.values() for line in lines)
    assert ids == list(range(900))  # every event once across the two
    on_first = sum(len(lines) for name, lines in rows.items() if name.startswith("a/"))
    assert on_first == 300  # chunks 0, 3, 6: round-robin; the dead server's went to the second


@pytest.mark.parametrize("gzip_file", [False, True], ids=["ndjson", "ndjson.gz"])
def test_send_streams_a_file_larger_than_a_chunk(server_factory, tmp_path, gzip_file):
    server = server_factory()
    events = generate_events(random.Random(8), 1000)
    path = tmp_path / ("events.ndjson.gz" if gzip_file else "events.ndjson")
    path.write_bytes(gzip.compress(ndjson(events)) if gzip_file else ndjson(events))  # a .gz file is read as such
    out = _sent("--url", server.url, "--batch-lines", "64", "--gzip", str(path))
    assert "sent 1,000 events" in out and "in 16 requests" in out
    assert_stops_holding(server, events)


def test_send_reports_a_bad_line_with_its_file_and_line(server_factory, tmp_path):
    server = server_factory()
    events = generate_events(random.Random(9), 300)
    lines = ndjson(events).splitlines(keepends=True)
    lines.insert(249, b'{"time":"2024-07-01T02:03:04Z","id":"not a number"}\n')  # line 250
    path = tmp_path / "broken.ndjson"
    path.write_bytes(b"".join(lines))
    proc = _send("--url", server.url, "--batch-lines", "100", str(path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert f"{path}:250: HTTP 400" in err and "field id" in err
    assert_stops_holding(server, events[:200])  # the chunks before it, whole


def test_send_retries_across_a_server_restart_without_duplicates(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory(output=out)
    events = generate_events(random.Random(10), 20000)
    path = tmp_path / "many.ndjson"
    path.write_bytes(ndjson(events))
    proc = _send("--url", server.url, "--batch-lines", "40", "--retries", "30", str(path))
    try:
        assert wait_for(lambda: server.client.get("/metrics").text.count("bea_events_accepted_total 0.0") == 0)
        server.kill()  # mid-run: the chunk in flight fails and is retried with its key
        assert proc.poll() is None, "send finished before the restart"
        server = server_factory(output=out, port=server.port)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "retrying" in stderr
    assert_stops_holding(server, events)


def test_send_reads_stdin(server_factory):
    server = server_factory()
    events = generate_events(random.Random(12), 250)
    result = subprocess.run(
        [
            *CLI,
            "send",
            "--no-progress",
            "--url",
            server.url,
            "--batch-lines",
            "100",
            "-",
        ],
        input=ndjson(events),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert b"sent 250 events" in result.stdout and b"in 3 requests" in result.stdout
    assert_stops_holding(server, events)


def test_send_waits_as_long_as_retry_after_says(server_factory, tmp_path):
    server = server_factory("--max-pending", "1MiB", "--max-body", "1MiB")
    big = ndjson([{"time": "2024-07-01T02:03:04Z", "id": i, "description": "x" * 100_000} for i in range(8)])
    events = generate_events(random.Random(13), 2000)  # about 400 KB: does not fit beside `big`
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(events))
    err_path = tmp_path / "send.err"
    with connect(server.port, timeout=30) as holder, open(err_path, "w") as err:
        # All but its last byte arrive: held in the pending budget (announced bytes hold nothing).
        holder.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big[:-1])
        proc = subprocess.Popen(
            [
                *CLI,
                "send",
                "--no-progress",
                "--url",
                server.url,
                "--batch-lines",
                "100000",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert wait_for(lambda: "HTTP 503" in err_path.read_text())
            holder.sendall(big[-1:])  # the budget frees up once this request is written
            assert holder.recv(4096).startswith(b"HTTP/1.1 200")
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err_path.read_text()
    assert "retrying in 1.0s: HTTP 503" in err_path.read_text()  # not the first backoff step, 0.2s
    assert "sent 2,000 events" in out


GOOD_EVENTS = [{"time": "2024-07-01T02:03:04Z", "id": 1}]


def test_send_refuses_a_url_without_a_scheme_at_once(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(GOOD_EVENTS))
    proc = _send("--url", "127.0.0.1:8080", str(path))
    out, err = proc.communicate(timeout=30)  # no retries: a configuration error fails at once
    assert proc.returncode == 2
    assert "is not an http:// or https:// URL" in err and "retrying" not in err


def test_send_prints_how_to_resume_and_a_resend_applies_nothing_twice(server_factory, tmp_path):
    server = server_factory()
    events = generate_events(random.Random(14), 300)
    lines = ndjson(events).splitlines(keepends=True)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(lines[:250]) + b'{"time":"2024-07-01T02:03:04Z","id":"x"}\n' + b"".join(lines[250:]))
    proc = _send("--url", server.url, "--batch-lines", "100", str(path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    prefix = err.split("idempotency key prefix: ", 1)[1].split()[0]
    resume = err.split("to resume without duplicates, run again with the same key prefix:\n", 1)[1].strip()
    assert f"--key-prefix {prefix}" in resume and resume.startswith("batched-event-api send")
    path.write_bytes(ndjson(events))  # the bad line fixed: the same chunks as before, but for the third
    args = shlex.split(resume)[2:]  # as printed, after `batched-event-api send`
    out = _sent(*args)
    assert "sent 100 events" in out and "200 events in 2 requests were already applied (replays)" in out
    assert_stops_holding(server, events)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_send_prints_how_to_resume_and_the_resume_applies_nothing_twice(server_factory, sig, code):
    token = "s3cret-token"
    server = server_factory("--auth-token", token)
    events = generate_events(random.Random(15), 300)
    body = ndjson(events)
    lines = body.splitlines(keepends=True)
    args = ["--url", server.url, "--batch-lines", "50", "--auth-token", token, "-"]
    proc = subprocess.Popen(
        [*CLI, "send", "--no-progress", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )
    try:
        # 200 lines given and stdin left open: three chunks go, the fourth waits for its last line.
        proc.stdin.write(b"".join(lines[:200]))  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        accepted = "bea_events_accepted_total 150.0"
        assert wait_for(
            lambda: accepted in server.client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
        )
        proc.send_signal(sig)
        out, err = (text.decode() for text in proc.communicate(timeout=60))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert f"interrupted by {sig.name}" in err and "Aborted!" not in err and token not in out + err
    prefix = err.split("idempotency key prefix: ", 1)[1].split()[0]
    resume = (
        err.split("to resume without duplicates, run again with the same key prefix:\n", 1)[1].splitlines()[0].strip()
    )
    assert resume == shlex.join(
        [
            "batched-event-api",
            "send",
            "--key-prefix",
            prefix,
            "--no-progress",
            "--url",
            server.url,
            "--batch-lines",
            "50",
            "-",
        ]
    )
    again = subprocess.run(
        [*CLI, *shlex.split(resume)[1:], "--auth-token", token],
        input=body,
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert b"sent 150 events" in again.stdout and b"150 events in 3 requests were already applied" in again.stdout
    assert_stops_holding(server, events)


def test_send_says_at_once_when_nothing_listens_at_the_url(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(GOOD_EVENTS))
    with socket.socket() as taken:  # bound, not listening: a port where nothing answers
        taken.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{taken.getsockname()[1]}"
        proc = _send("--url", url, str(path))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"error: nothing is listening at {url} (Connection refused)" in err
    assert "retrying" not in err and "to resume" not in err  # nothing was applied: nothing to resume


def test_a_short_send_off_a_terminal_prints_only_its_summary_in_plain_words(server_factory, tmp_path):
    server = server_factory()
    path = tmp_path / "one.ndjson"
    path.write_bytes(ndjson(GOOD_EVENTS))
    proc = _send("--url", server.url, "--key-prefix", "k1", str(path))
    out, err = proc.communicate(timeout=60)
    assert err == "idempotency key prefix: k1\n"  # no progress line for a run this short
    size = len(ndjson(GOOD_EVENTS))
    assert out.startswith(f"sent 1 event ({size / 1e6:.1f} MB) in 1 request from 1 file in ")
    out = _sent("--url", server.url, "--key-prefix", "k1", str(path))  # the same again: a replay
    assert out.startswith("sent 0 events (0.0 MB) in 1 request from 1 file in ")  # replayed bytes are not sent MB
    assert "1 event in 1 request was already applied (replays); 0 retries" in out


def _on_a_terminal(args: list[str], columns: int) -> tuple[int, list[str]]:
    """Run a command with a terminal of `columns` columns as its stdout and stderr: its exit status
    and the lines it drew, escape sequences removed."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    drawn = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command and its terminal are gone
            break
        if not data:
            break
        drawn.append(data)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(drawn).decode())
    return proc.wait(timeout=60), [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_the_progress_bar_fits_an_80_column_terminal(server_factory):
    server = server_factory()
    code, lines = _on_a_terminal(
        [
            *CLI,
            "send",
            "--url",
            server.url,
            "--batch-lines",
            "20",
            str(SEED / "initial-dataset-01.ndjson"),
        ],
        80,
    )
    assert code == 0
    bars = [line for line in lines if "events/s" in line and not line.startswith("sent ")]
    assert bars and all(len(line) <= 80 for line in bars), bars
    assert "400 events" in bars[-1] and "/103.2 kB" in bars[-1]  # the last one whole, its unit on its line


def test_status_describes_a_directory_without_a_server(server_factory, tmp_path):
    out = tmp_path / "out"
    server = server_factory(output=out)
    events = [
        {"time": "2024-07-01T02:03:04Z", "id": 1},
        {"time": "2024-07-01T02:09:00Z", "id": 2},
        {"time": "2024-07-01T02:10:00Z", "id": 3},
    ]
    assert server.post(ndjson(events)).status_code == 200
    server.kill()  # the second window stays open
    result = run_cli("status", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["served"] is False
    assert state["open"]["name"] == "user-events-20240701-020900.csv" and state["open"]["rows"] == 2
    assert state["open"]["start"] == "2024-07-01T02:09:00Z"
    assert state["committed_files"] == 1 and state["newest_committed"] == "user-events-20240701-020304.csv"
    assert state["pending_publish"] == [] and state["journal_records"] >= 1
    text = run_cli("status", "-o", str(out)).stdout
    assert "open window:       user-events-20240701-020900.csv" in text and "2 rows" in text
    missing = run_cli("status", "-o", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


def test_a_taken_port_is_one_line_and_creates_nothing(server_factory, tmp_path):
    server = server_factory()
    result = run_cli("serve", "-o", str(tmp_path / "never"), "--port", str(server.port))
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{server.port}: the port is in use"
    assert not (tmp_path / "never").exists()


def test_an_output_that_is_a_file_is_refused_as_not_a_directory(tmp_path):
    a_file = tmp_path / "hostname"
    a_file.write_text("not a directory\n")
    result = run_cli("serve", "-o", str(a_file), "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: cannot write to {a_file}: it is not a directory"


def test_a_read_only_output_directory_is_one_plain_sentence(tmp_path):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o555)
    result = subprocess.run(
        [*AS_A_USER, *CLI, "serve", "-o", str(out), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out.chmod(0o755)  # so that pytest can remove it
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: cannot serve from {out}: the directory is not writable (permission denied)"


def test_the_log_names_the_port_actually_bound(tmp_path):
    proc = subprocess.Popen(
        [*CLI, "serve", "-o", str(tmp_path / "out"), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        while "serving on" not in line:
            line = proc.stderr.readline()
            assert line, "the server exited before it said where it listens"
        port = int(line.split("serving on http://127.0.0.1:", 1)[1].split(",", 1)[0])
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_option_errors_name_the_environment_variable_only_when_it_was_the_source(tmp_path):
    given = run_cli("serve", "-o", str(tmp_path / "out"), "--interval", "5x")
    assert given.returncode == 2
    assert (
        "Invalid value for '--interval': '5x' is not a duration" in given.stderr and "BEA_INTERVAL" not in given.stderr
    )
    from_env = run_cli("serve", "-o", str(tmp_path / "out"), env={"BEA_INTERVAL": "5x"})
    assert from_env.returncode == 2 and "(from the environment variable BEA_INTERVAL)" in from_env.stderr


def test_compound_durations_parse():
    from batched_event_api.cli.options import Duration

    parse = Duration().convert
    assert [parse(v, None, None) for v in ("300", "5m", "1h30m", "250ms", "1m30.5s")] == [300, 300, 5400, 0.25, 90.5]


def test_version_is_printed_and_is_the_changelogs_newest():
    from batched_event_api import __version__

    result = run_cli("--version")
    assert result.stdout.strip() == f"batched-event-api, version {__version__}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.split("\n## ", 1)[1].startswith(__version__)


def test_a_request_path_cannot_forge_a_log_line_and_is_not_echoed(server_factory):
    server = server_factory()
    forged = "/x%0a2026-12-05 10:00:00 INFO batched_event_api: committed FAKE.csv%0d%1b[2J"
    response = server.client.get(forged)
    assert response.status_code == 404 and "FAKE" not in response.text
    assert server.stop() == 0
    lines = server.log.read_text().splitlines()
    assert not any(line.startswith("2026-12-05 10:00:00") or "\x1b" in line or "\r" in line for line in lines)
    assert any(
        "GET /x\\n2026-12-05 10:00:00 INFO batched_event_api: committed FAKE.csv\\r\\x1b[2J 404" in line
        for line in lines
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash completion needs bash")
def test_bash_completion_as_the_readme_sets_it_up_works_without_an_active_venv(tmp_path):
    # A clone's console script, as pip writes it: this interpreter, this source (PYTHONPATH).
    program = tmp_path / "clone" / ".venv" / "bin" / "batched-event-api"
    program.parent.mkdir(parents=True)
    program.write_text(
        f"#!{sys.executable}\nimport sys\nfrom batched_event_api.cli.main import main\nsys.exit(main())\n"
    )
    program.chmod(0o755)
    # The README's setup, run from the clone: the script saved once, sourced by ~/.bashrc.
    script = subprocess.run(
        [".venv/bin/batched-event-api"],
        cwd=program.parents[2],
        capture_output=True,
        text=True,
        env={**os.environ, "_BATCHED_EVENT_API_COMPLETE": "bash_source"},
        timeout=60,
    ).stdout
    (tmp_path / "complete.bash").write_text(script)
    # TAB after `batched-event-api se` elsewhere, the venv not on PATH: what bash runs is the
    # registered function with the command word as $1.
    tab = (
        ". ./complete.bash; COMP_WORDS=(batched-event-api se); COMP_CWORD=1; "
        '$(complete -p batched-event-api | sed "s/.*-F \\([^ ]*\\) .*/\\1/") batched-event-api; echo "${COMPREPLY[*]}"'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", tab],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.stderr == "" and result.stdout.split() == ["send", "serve"]
    for shell in ("zsh", "fish"):  # their scripts call the program by its path too
        source = subprocess.run(
            [str(program)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "_BATCHED_EVENT_API_COMPLETE": f"{shell}_source"},
        ).stdout
        assert f"_COMPLETE={shell}_complete" in source and f" {program})" in source
