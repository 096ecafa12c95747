"""Limits that keep one client from holding what others need: silent and dribbling connections,
a flood of sockets, and many large bodies at once. Against the real server, over real sockets."""

from __future__ import annotations

import socket
import threading

import httpx
from conftest import csv_files, wait_for
from model import model_files, ndjson

GOOD = [{"time": "2024-07-01T02:03:04Z", "id": 1}]


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_body_that_never_comes_gets_408_and_the_connection_closed(server_factory):
    server = server_factory("--body-timeout", "500ms")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as silent:
        silent.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                       b"Content-Length: 100\r\n\r\n")  # then not one byte of the body
        answer = _read_all(silent)  # returns only because the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request body" in answer
    assert server.post(ndjson(GOOD)).status_code == 200
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(GOOD)


def test_silent_and_dribbling_connections_are_closed_after_the_header_timeout(server_factory):
    server = server_factory("--header-timeout", "500ms")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as silent, \
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as dribbling:
        dribbling.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        assert _read_all(silent).startswith(b"HTTP/1.1 408")
        answer = _read_all(dribbling)
    assert answer.startswith(b"HTTP/1.1 408") and b"headers" in answer
    # A normal client on a kept-alive connection is not affected.
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.post("/user/event", content=ndjson(GOOD)).status_code == 200


def test_connections_beyond_the_cap_get_503_and_are_closed(server_factory):
    server = server_factory("--max-connections", "4")
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as extra:
            answer = _read_all(extra)
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
    second = ndjson(_events(100, 4, 100_000))  # ~400 KB: does not fit beside the first
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as slow:
        slow.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(first) + first[: len(first) // 2])
        assert wait_for(lambda: _pending(server) == len(first))  # reserved by Content-Length
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
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(_events(0, 8, 100_000) + _events(100, 4, 100_000))


def test_a_client_that_leaves_mid_body_gives_its_pending_bytes_back(server_factory):
    server = server_factory("--max-pending", "1MiB", "--max-body", "1MiB")
    body = ndjson(_events(0, 4, 100_000))
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as leaving:
        leaving.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                        + body[: len(body) // 2])
        assert wait_for(lambda: _pending(server) == len(body))
    assert wait_for(lambda: _pending(server) == 0)
    assert server.post(body).status_code == 200  # the whole budget is there again
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(_events(0, 4, 100_000))


def test_concurrent_large_bodies_are_written_or_refused_whole(server_factory):
    """16 clients at once, 2 MB each, 4 MiB of room: every answer 200 or 503 + Retry-After; the
    rows of every 200 are written, none of a 503."""
    server = server_factory("--max-pending", "4MiB", "--max-body", "4MiB")
    bodies = [_events(i * 1000, 20, 100_000) for i in range(16)]
    answers: dict[int, httpx.Response] = {}

    def post(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answers[i] = client.post("/user/event", content=ndjson(bodies[i]), headers={"content-type": "application/x-ndjson"})

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
        line for i, r in answers.items() if r.status_code == 200
        for content in model_files(bodies[i]).values() for line in content.splitlines()
    )
    assert written == expected
    print(f"16 concurrent 2 MB requests, 4 MiB pending allowed: {statuses.count(200)} written, {statuses.count(503)} refused")
    assert statuses.count(200) >= 1


def test_curl_default_content_type_is_taken_as_ndjson_and_other_types_are_refused(server_factory):
    server = server_factory()
    assert server.post(ndjson(GOOD), {"content-type": "application/x-www-form-urlencoded"}).json() == {"accepted": 1}
    for other in ("text/csv", "multipart/form-data; boundary=x", "application/xml"):
        response = server.post(ndjson(GOOD), {"content-type": other})
        assert response.status_code == 415, other
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(GOOD)
