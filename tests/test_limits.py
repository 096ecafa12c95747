"""Limits that keep one client from holding what others need: silent and dribbling connections,
a flood of sockets, and many large bodies at once. Against the real server, over real sockets."""

from __future__ import annotations

import signal
import socket
import threading

import httpx
import pytest

from model import model_files, ndjson
from polling import wait_for
from rawhttp import connect, read_all, send_until_the_server_stops_reading
from servers import assert_stops_holding, memory_mib
from snapshots import csv_files

GOOD = [{"time": "2024-07-01T02:03:04Z", "id": 1}]


def test_a_body_that_never_comes_gets_408_and_the_connection_closed(server_factory):
    server = server_factory("--body-timeout", "500ms")
    with connect(server.port) as silent:
        silent.sendall(
            b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n"
        )  # then not one byte of the body
        answer = read_all(silent)  # returns only because the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request body" in answer
    assert server.post(ndjson(GOOD)).status_code == 200
    assert_stops_holding(server, GOOD)


def test_silent_and_dribbling_connections_are_closed_after_the_header_timeout(server_factory):
    server = server_factory("--header-timeout", "500ms")
    with (
        connect(server.port) as silent,
        connect(server.port) as dribbling,
    ):
        dribbling.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        assert read_all(silent).startswith(b"HTTP/1.1 408")
        answer = read_all(dribbling)
    assert answer.startswith(b"HTTP/1.1 408") and b"headers" in answer
    # A normal client on a kept-alive connection is not affected.
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.post("/user/event", content=ndjson(GOOD)).status_code == 200


def test_connections_beyond_the_cap_get_503_and_are_closed(server_factory):
    server = server_factory("--max-connections", "4")
    idle = [connect(server.port) for _ in range(4)]
    try:
        with connect(server.port) as extra:
            answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
    finally:
        for sock in idle:
            sock.close()
    # With the idle ones gone there is room again.
    assert wait_for(lambda: _status_on_new_connection(server) == 200)
    assert "the limit is 4" in server.log.read_text()


def _status_on_new_connection(server) -> int:
    try:
        with httpx.Client(base_url=server.url) as client:
            return client.post("/user/event", content=ndjson(GOOD)).status_code
    except httpx.TransportError:
        return 0


def _pending(server) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith("bea_pending_bytes "):
            return float(line.split()[1])
    raise AssertionError("no bea_pending_bytes metric")


def _events(first_id: int, n: int, size: int) -> list[dict]:
    pad = "x" * size
    return [{"time": "2024-07-01T02:03:04Z", "id": first_id + i, "description": pad} for i in range(n)]


def test_a_request_that_would_pass_the_pending_limit_gets_503_before_its_body_is_read(server_factory):
    server = server_factory("--max-pending", "1MiB", "--max-body", "1MiB")
    first = ndjson(_events(0, 8, 100_000))  # ~800 KB, sent in two halves
    second = ndjson(_events(100, 7, 100_000))  # ~700 KB: does not fit beside the half of the first that arrived
    with connect(server.port) as slow:
        slow.sendall(
            b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: %d\r\n\r\n" % len(first) + first[: len(first) // 2]
        )
        assert wait_for(lambda: _pending(server) == len(first) // 2)  # what arrived, not what was announced
        refused = server.post(second)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        readiness = server.client.get("/readyz")
        assert readiness.status_code == 503 and readiness.json()["error"].startswith("pending-bytes limit")
        slow.sendall(first[len(first) // 2 :])
        head = slow.recv(65536)
    assert head.startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: _pending(server) == 0)
    assert server.post(second).status_code == 200  # room again
    assert_stops_holding(server, _events(0, 8, 100_000) + _events(100, 7, 100_000))


def test_a_client_that_leaves_mid_body_gives_its_pending_bytes_back(server_factory):
    server = server_factory("--max-pending", "1MiB", "--max-body", "1MiB")
    body = ndjson(_events(0, 4, 100_000))
    with connect(server.port) as leaving:
        leaving.sendall(
            b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
        assert wait_for(lambda: _pending(server) == len(body) // 2)
    assert wait_for(lambda: _pending(server) == 0)
    assert server.post(body).status_code == 200  # the whole budget is there again
    assert_stops_holding(server, _events(0, 4, 100_000))


def test_concurrent_large_bodies_are_written_or_refused_whole(server_factory):
    """16 clients at once, 2 MB each, 4 MiB of room: every answer 200 or 503 + Retry-After; the
    rows of every 200 are written, none of a 503."""
    server = server_factory("--max-pending", "4MiB", "--max-body", "4MiB")
    bodies = [_events(i * 1000, 20, 100_000) for i in range(16)]
    answers: dict[int, httpx.Response] = {}

    def post(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answers[i] = client.post(
                "/user/event", content=ndjson(bodies[i]), headers={"content-type": "application/x-ndjson"}
            )

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.stop() == 0
    statuses = sorted(r.status_code for r in answers.values())
    assert set(statuses) <= {200, 503}
    assert all(r.headers.get("retry-after") == "1" for r in answers.values() if r.status_code == 503)
    written = sorted(line for content in csv_files(server.output).values() for line in content.splitlines())
    expected = sorted(
        line
        for i, r in answers.items()
        if r.status_code == 200
        for content in model_files(bodies[i]).values()
        for line in content.splitlines()
    )
    assert written == expected
    print(
        f"16 concurrent 2 MB requests, 4 MiB pending allowed: {statuses.count(200)} written, {statuses.count(503)} refused"
    )
    assert statuses.count(200) >= 1


def test_curl_default_content_type_is_taken_as_ndjson_and_other_types_are_refused(server_factory):
    server = server_factory()
    assert server.post(ndjson(GOOD), {"content-type": "application/x-www-form-urlencoded"}).json() == {"accepted": 1}
    for other in ("text/csv", "multipart/form-data; boundary=x", "application/xml"):
        response = server.post(ndjson(GOOD), {"content-type": other})
        assert response.status_code == 415, other
    assert_stops_holding(server, GOOD)


# -- issue 19: connections that announce much and send little, or never read ---------------------


def test_bodies_announced_but_not_sent_hold_none_of_the_pending_budget(server_factory):
    """Five connections declare 64 MiB bodies and send one byte: other clients are still served,
    and /readyz stays ready (a load balancer would otherwise pull the instance)."""
    server = server_factory("--max-pending", "256MiB", "--max-body", "64MiB", "--body-timeout", "60s")
    hogs = [connect(server.port) for _ in range(5)]
    try:
        for hog in hogs:
            hog.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n{")
        assert wait_for(lambda: _pending(server) == 5)
        assert server.post(ndjson(GOOD)).status_code == 200
        assert server.client.get("/readyz").status_code == 200
    finally:
        for hog in hogs:
            hog.close()
    assert_stops_holding(server, GOOD)


def test_a_body_slower_than_the_minimum_rate_gets_408_before_the_body_timeout(server_factory):
    server = server_factory("--min-body-rate", "1KiB", "--body-timeout", "120s")
    with connect(server.port, timeout=60) as slow:
        slow.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + ndjson(GOOD))
        answer = read_all(slow)  # the server closes it once the grace period shows the rate
    assert answer.startswith(b"HTTP/1.1 408") and b"--min-body-rate" in answer
    assert server.stop() == 0
    assert csv_files(server.output) == {}


@pytest.mark.parametrize(
    "first, request_bytes",
    [
        (b"", b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),  # served by the protocol
        (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),  # served by the ASGI application
        (b"", b"GET / HTTP/1.1\r\n\r\n"),  # the smallest request: the most per byte read
        # A static file's response listens for a disconnect, and uvicorn resumes reading for that.
        (
            b"GET /docs/assets/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ],
    ids=["ingest", "healthz", "tiny", "behind-a-file"],
)
def test_pipelined_requests_whose_answers_are_never_read_hold_bounded_memory(server_factory, first, request_bytes):
    """Ten connections each pipeline 15 MB of requests and read no answer: the server stops
    reading them, holds a bounded amount for each, serves others meanwhile, logs no error when
    they leave, and shuts down at once with them still connected."""
    server = server_factory("--send-timeout", "10m")
    assert server.post(ndjson(GOOD)).status_code == 200
    before = memory_mib(server.proc.pid)
    flood = first + request_bytes * (15_000_000 // len(request_bytes))
    greedy: list[socket.socket] = []
    try:
        taken = []
        for _ in range(10):  # each opened as it sends (a silent one is closed after --header-timeout)
            greedy.append(connect(server.port))
            taken.append(send_until_the_server_stops_reading(greedy[-1], flood))
        grown = memory_mib(server.proc.pid) - before
        print(
            f"{request_bytes.split()[1].decode()}: {min(taken)}..{max(taken)} of {len(flood)} bytes taken on each of "
            f"10 connections, RSS +{grown:.1f} MiB"
        )
        assert max(taken) < len(flood)  # it stopped reading
        assert grown < 60
        # Others are served meanwhile, and a greedy client gets its answers once it reads.
        assert server.post(ndjson(GOOD)).status_code == 200
        greedy[0].setblocking(True)
        assert greedy[0].recv(4096).startswith(b"HTTP/1.1 ")
        greedy.pop(0).close()
        assert server.post(ndjson(GOOD)).status_code == 200  # after the first one left
        assert server.stop() == 0  # with nine still connected
    finally:
        for sock in greedy:
            sock.close()
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log
    assert csv_files(server.output) == model_files(GOOD * 3)


def test_a_client_that_reads_no_answers_is_closed_after_the_send_timeout_and_gives_its_bytes_back(server_factory):
    server = server_factory("--send-timeout", "1s", "--max-body", "1MiB", "--max-pending", "2MiB")
    body = ndjson(_events(0, 9, 100_000))  # 900 KB
    request = b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    greedy = connect(server.port)
    try:
        send_until_the_server_stops_reading(
            greedy, b"GET /docs/assets/swagger-ui-bundle.js HTTP/1.1\r\n\r\n" * 4 + request * 2
        )
        assert wait_for(lambda: "read no answer for 1s (--send-timeout)" in server.log.read_text())
        assert wait_for(lambda: _pending(server) == 0)
        assert server.client.get("/readyz").status_code == 200
    finally:
        greedy.close()
    assert server.stop() == 0


def test_shutdown_answers_connections_mid_headers_or_mid_body_at_once(server_factory):
    """SIGTERM with one client stuck mid-body and one mid-headers: both get 503 now, not after
    --body-timeout, and the open window is committed."""
    server = server_factory("--body-timeout", "120s", "--header-timeout", "120s", "--min-body-rate", "0")
    assert server.post(ndjson(GOOD)).status_code == 200
    with (
        connect(server.port, timeout=60) as mid_body,
        connect(server.port, timeout=60) as mid_head,
    ):
        mid_body.sendall(b'POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"time":')
        mid_head.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\n")
        assert wait_for(lambda: _pending(server) == len(b'{"time":'))
        server.proc.send_signal(signal.SIGTERM)
        body_answer, head_answer = read_all(mid_body), read_all(mid_head)
    assert body_answer.startswith(b"HTTP/1.1 503") and b"shutting down" in body_answer
    assert head_answer.startswith(b"HTTP/1.1 503")
    assert server.proc.wait(timeout=60) == 0
    assert csv_files(server.output) == model_files(GOOD)


def test_an_endless_header_line_is_431_before_it_ends(server_factory):
    server = server_factory("--header-timeout", "120s")
    with connect(server.port, timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        try:
            for _ in range(1000):  # 8 MB at most; the server answers and closes long before
                sock.sendall(b"a" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431")
    assert server.stop() == 0


def test_a_connection_answered_before_its_body_ended_is_closed_when_idle(server_factory):
    """A refused request's body arrives after its answer: the connection is then idle, and closed
    after --keep-alive like any other; a broken chunk after it is not answered a second time."""
    server = server_factory(
        "--keep-alive", "1s", "--header-timeout", "120s", "--body-timeout", "120s", "--min-body-rate", "0"
    )
    for rest in (b"0123456789", b""):
        with connect(server.port, timeout=60) as sock:
            if rest:
                sock.sendall(
                    b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 10\r\n\r\n"
                )
            else:
                sock.sendall(
                    b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 415")
            sock.sendall(rest or b"zz\r\n")
            assert read_all(sock) == b""  # closed, and nothing more said
    assert server.stop() == 0
