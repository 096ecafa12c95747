"""Hostile and broken input against the real server: a precise 4xx, bounded work, and nothing of
the refused request written, while the good requests around it are intact."""

from __future__ import annotations

import gzip
import socket
import zlib

import httpx
import pytest
from conftest import csv_files
from model import model_files, ndjson

GOOD_BEFORE = [{"time": "2024-07-01T02:03:04Z", "id": 1, "description": "before"}]
GOOD_AFTER = [{"time": "2024-07-01T02:03:06Z", "id": 3, "description": "after"}]
T = '"time":"2024-07-01T02:03:05Z"'


def _around(server, bad: bytes, headers: dict | None = None) -> httpx.Response:
    """good request, the bad one, good request; then the files must hold exactly the good ones."""
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
    response = server.post(bad, headers)
    assert server.post(ndjson(GOOD_AFTER)).status_code == 200
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(GOOD_BEFORE + GOOD_AFTER)
    assert response.headers["content-type"] == "application/json"
    return response


BAD_LINES = [
    ("invalid JSON", "{%s," % T, None, "JSON"),
    ("array", "[1,2]", None, "object"),
    ("number", "42", None, "object"),
    ("string", '"hello"', None, "object"),
    ("wrong type id", '{%s,"id":"5"}' % T, "id", "int"),
    ("float id", '{%s,"id":1.5}' % T, "id", "int"),
    ("bool as string", '{%s,"active":"true"}' % T, "active", "bool"),
    ("int64 overflow", '{%s,"id":9223372036854775808}' % T, "id", "9223372036854775807"),
    ("out of range float", '{%s,"credits":1e400}' % T, "credits", "range"),
    ("NaN", '{%s,"credits":NaN}' % T, None, "JSON"),
    ("missing time", '{"id":1}', "time", "time"),
    ("null time", '{"time":null}', "time", "str"),
    ("time without zone", '{"time":"2024-07-01T02:03:05"}', "time", "RFC 3339"),
    ("time not a date", '{"time":"2024-02-30T02:03:05Z"}', "time", "day"),
]


@pytest.mark.parametrize(("case", "line", "field", "expected"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_event_is_400_with_line_and_field(server_factory, case, line, field, expected):
    server = server_factory()
    body = ('{%s}\n\n{%s}\n' % (T, T) + line + "\n" + '{%s}\n' % T).encode()
    response = _around(server, body)
    assert response.status_code == 400
    error = response.json()
    assert error["line"] == 4
    assert error.get("field") == field
    assert expected.lower() in error["error"].lower()


def test_invalid_utf8_is_400(server_factory):
    server = server_factory()
    response = _around(server, ('{%s}\n' % T).encode() + b'{"time":"2024-07-01T02:03:05Z","email":"\xff\xfe"}\n')
    assert response.status_code == 400
    assert response.json()["line"] == 2 and "UTF-8" in response.json()["error"]


def test_quirks_are_accepted(server_factory):
    server = server_factory()
    long_text = "x" * (1 << 20)
    events = [
        {"time": "2024-07-01T02:03:04Z", "id": 1},
        {"time": "2024-07-01T02:03:05Z", "description": long_text},
        {"time": "2024-07-01T02:03:06Z", "id": 3},
    ]
    import json

    body = ("\n  \t\n" + json.dumps(events[0]) + "\r\n\r\n" + json.dumps(events[1]) + "\n \n" + json.dumps(events[2])).encode()
    assert server.post(body).json() == {"accepted": 3}
    assert server.post(b"").json() == {"accepted": 0}
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(events)


def test_body_over_the_limit_is_413(server_factory):
    server = server_factory("--max-body", "1KiB")
    body = ndjson([{"time": "2024-07-01T02:03:05Z", "description": "y" * 100}] * 20)
    assert len(body) > 1024
    response = _around(server, body)
    assert response.status_code == 413 and "1024" in response.json()["error"]


def test_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server_factory):
    server = server_factory("--max-body", "1MiB")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                  b"Content-Length: 1073741824\r\n\r\n")
        head = s.recv(4096)  # answered without the server waiting for 1 GiB
    assert head.startswith(b"HTTP/1.1 413")


def test_line_over_the_limit_is_413_naming_the_line(server_factory):
    server = server_factory("--max-line", "200")
    body = ('{%s}\n{%s,"description":"%s"}\n' % (T, T, "z" * 300)).encode()
    response = _around(server, body)
    assert response.status_code == 413
    assert response.json()["line"] == 2


def test_gzip_body_is_accepted(server_factory):
    server = server_factory()
    events = [{"time": "2024-07-01T02:03:04Z", "id": i} for i in range(100)]
    body = gzip.compress(ndjson(events[:50])) + gzip.compress(ndjson(events[50:]))  # two members
    assert server.post(body, {"Content-Encoding": "gzip"}).json() == {"accepted": 100}
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(events)


def _peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_gzip_bomb_is_413_in_bounded_memory(server_factory):
    server = server_factory("--max-body", "1MiB")
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(deflate.compress(b"\n" * (1 << 20)) for _ in range(1024)) + deflate.flush()  # 1 GiB inflated
    assert len(bomb) < 2 << 20
    before = _peak_rss_mib(server.proc.pid)
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
    response = server.post(bomb, {"Content-Encoding": "gzip"})
    assert response.status_code == 413 and response.json()["error"]
    assert _peak_rss_mib(server.proc.pid) - before < 64  # never inflated far past the limit
    assert server.post(ndjson(GOOD_AFTER)).status_code == 200
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(GOOD_BEFORE + GOOD_AFTER)


@pytest.mark.parametrize("body", [gzip.compress(b'{"time":"2024-07-01T02:03:05Z"}\n')[:-12], b"not gzip at all"])
def test_truncated_or_corrupt_gzip_is_400(server_factory, body):
    server = server_factory()
    response = _around(server, body, {"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "application/xml"}, {"Content-Type": "multipart/form-data"}, {"Content-Encoding": "br"}],
)
def test_unsupported_type_or_encoding_is_415(server_factory, headers):
    server = server_factory()
    response = _around(server, ndjson([{"time": "2024-07-01T02:03:05Z"}]), headers)
    assert response.status_code == 415


@pytest.mark.parametrize("content_type", ["application/jsonl", "application/json; charset=utf-8", "text/plain", None])
def test_accepted_content_types(server_factory, content_type):
    server = server_factory()
    headers = {"Content-Type": content_type} if content_type else {}
    request = server.client.build_request("POST", "/user/event", content=ndjson(GOOD_BEFORE), headers=headers)
    assert request.headers.get("content-type") == content_type
    assert server.client.send(request).json() == {"accepted": 1}


def test_methods_and_paths(server_factory):
    server = server_factory()
    response = server.client.get("/user/event")
    assert response.status_code == 405 and response.headers["allow"] == "POST" and response.json()["error"]
    response = server.client.post("/healthz")
    assert response.status_code == 405 and "GET" in response.headers["allow"] and response.json()["error"]
    response = server.client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]


def test_bearer_token(server_factory, tmp_path):
    server = server_factory("--auth-token", "s3cret-token")
    body = ndjson(GOOD_BEFORE)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        response = server.post(body, headers)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert server.client.get("/metrics").status_code == 401
    assert server.client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert server.client.get("/healthz").status_code == 200 and server.client.get("/readyz").status_code == 200
    assert server.post(body, {"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert server.stop() == 0
    assert "s3cret-token" not in server.log.read_text()
    assert csv_files(server.output) == model_files(GOOD_BEFORE)


def test_bearer_token_from_file_and_environment(server_factory, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    server = server_factory("--auth-token-file", str(token_file))
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 401
    assert server.post(ndjson(GOOD_BEFORE), {"Authorization": "Bearer from-file"}).status_code == 200
    server = server_factory(output=tmp_path / "other", env={"BEA_AUTH_TOKEN": "from-env"})
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 401
    assert server.post(ndjson(GOOD_BEFORE), {"Authorization": "Bearer from-env"}).status_code == 200


def test_slow_client_gets_408_and_does_not_stall_others(server_factory):
    server = server_factory("--body-timeout", "500ms")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"time\":")
        # Another client is served while the slow one holds its connection open.
        assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
        head = slow.recv(4096)
    assert head.startswith(b"HTTP/1.1 408")
    assert server.stop() == 0
    assert csv_files(server.output) == model_files(GOOD_BEFORE)
