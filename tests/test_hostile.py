"""Hostile and broken input against the real server: a precise 4xx, bounded work, and nothing of
the refused request written, while the good requests around it are intact."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from model import model_files, ndjson
from rawhttp import connect
from servers import assert_stops_holding, memory_mib
from snapshots import csv_files

GOOD_BEFORE = [{"time": "2024-07-01T02:03:04Z", "id": 1, "description": "before"}]
GOOD_AFTER = [{"time": "2024-07-01T02:03:06Z", "id": 3, "description": "after"}]
T = '"time":"2024-07-01T02:03:05Z"'


def _around(server, bad: bytes, headers: dict | None = None) -> httpx.Response:
    """good request, the bad one, good request; then the files must hold exactly the good ones."""
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
    response = server.post(bad, headers)
    assert server.post(ndjson(GOOD_AFTER)).status_code == 200
    assert_stops_holding(server, GOOD_BEFORE + GOOD_AFTER)
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
    body = ("{%s}\n\n{%s}\n" % (T, T) + line + "\n" + "{%s}\n" % T).encode()
    response = _around(server, body)
    assert response.status_code == 400
    error = response.json()
    assert error["line"] == 4
    assert error.get("field") == field
    assert expected.lower() in error["error"].lower()


def test_invalid_utf8_is_400(server_factory):
    server = server_factory()
    response = _around(server, ("{%s}\n" % T).encode() + b'{"time":"2024-07-01T02:03:05Z","email":"\xff\xfe"}\n')
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

    body = (
        "\n  \t\n" + json.dumps(events[0]) + "\r\n\r\n" + json.dumps(events[1]) + "\n \n" + json.dumps(events[2])
    ).encode()
    assert server.post(body).json() == {"accepted": 3}
    assert server.post(b"").json() == {"accepted": 0}
    assert_stops_holding(server, events)


def test_body_over_the_limit_is_413(server_factory):
    server = server_factory("--max-body", "1KiB")
    body = ndjson([{"time": "2024-07-01T02:03:05Z", "description": "y" * 100}] * 20)
    assert len(body) > 1024
    response = _around(server, body)
    assert response.status_code == 413 and "1024" in response.json()["error"]


def test_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server_factory):
    server = server_factory("--max-body", "1MiB")
    with connect(server.port, timeout=10) as s:
        s.sendall(
            b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
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
    assert_stops_holding(server, events)


def test_gzip_bomb_is_413_in_bounded_memory(server_factory):
    server = server_factory("--max-body", "1MiB")
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(deflate.compress(b"\n" * (1 << 20)) for _ in range(1024)) + deflate.flush()  # 1 GiB inflated
    assert len(bomb) < 2 << 20
    before = memory_mib(server.proc.pid, "VmHWM")
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
    response = server.post(bomb, {"Content-Encoding": "gzip"})
    assert response.status_code == 413 and response.json()["error"]
    assert memory_mib(server.proc.pid, "VmHWM") - before < 64  # never inflated far past the limit
    assert server.post(ndjson(GOOD_AFTER)).status_code == 200
    assert_stops_holding(server, GOOD_BEFORE + GOOD_AFTER)


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
    with connect(server.port, timeout=10) as slow:
        slow.sendall(
            b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b'Content-Length: 1000\r\n\r\n{"time":'
        )
        # Another client is served while the slow one holds its connection open.
        assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
        head = slow.recv(4096)
    assert head.startswith(b"HTTP/1.1 408")
    assert_stops_holding(server, GOOD_BEFORE)


# -- event times, nesting and windows a request may not have (issue 19) -------------------------

PATHS = [{}, {"BEA_NATIVE": "0"}]  # the native pass, and the Python path alone: the same answers
PATH_IDS = ["native", "python"]
OUT_OF_RANGE = [
    "2900-01-01T00:00:00Z",
    "1600-01-01T00:00:00Z",
    "2262-01-01T00:00:00Z",  # the first instant past the range
    "1678-01-01T00:30:00+01:00",  # 1677-12-31T23:30:00Z once the offset is applied
    "9999-12-31T23:59:59-23:59",  # a UTC year 10000: a window name of 9 digits
]


@pytest.mark.parametrize("env", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("when", OUT_OF_RANGE)
def test_a_time_outside_the_accepted_range_is_400_and_ingest_carries_on_across_a_restart(server_factory, env, when):
    server = server_factory(env=env)
    response = server.post(('{%s}\n\n{"time":"%s","id":2}\n' % (T, when)).encode())
    assert response.status_code == 400
    error = response.json()
    assert (error["line"], error["field"]) == (3, "time")
    assert "1678-01-01T00:00:00Z" in error["error"] and "2262-01-01T00:00:00Z" in error["error"]
    assert server.post(ndjson(GOOD_BEFORE)).status_code == 200
    server.kill()
    server = server_factory(env=env)  # the same output directory, recovered
    assert server.post(ndjson(GOOD_AFTER)).status_code == 200
    assert_stops_holding(server, GOOD_BEFORE + GOOD_AFTER)


@pytest.mark.parametrize("env", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize(
    "align", [[], ["--align", "interval", "--interval", "168h"]], ids=["first-event", "aligned-week"]
)
def test_the_edges_of_the_range_are_accepted_and_every_window_name_is_a_plain_utc_stamp(server_factory, env, align):
    import re

    server = server_factory(*align, env=env)
    edges = [
        {"time": "1678-01-01T00:00:00Z", "id": 1},
        {"time": "2261-12-31T23:59:59.999999999Z", "id": 2},
        {"time": "2262-01-01T00:59:59+01:00", "id": 3},  # 2261-12-31T23:59:59Z
    ]
    assert server.post(ndjson(edges)).json() == {"accepted": 3}
    for when in OUT_OF_RANGE:
        assert server.post(ndjson([{"time": when}])).status_code == 400
    assert server.stop() == 0
    names = sorted(csv_files(server.output))
    assert all(re.fullmatch(r"user-events-[0-9]{8}-[0-9]{6}\.csv", name) for name in names), names
    if not align:
        assert names == ["user-events-16780101-000000.csv", "user-events-22611231-235959.csv"]
    else:  # weeks since the epoch (a Thursday): the first one begins in 1677
        assert len(names) == 2 and names[0].startswith("user-events-1677") and names[1].startswith("user-events-2261")


@pytest.mark.parametrize("env", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize(
    "nested",
    ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000],
    ids=["arrays", "objects", "closed-arrays"],
)
def test_deeply_nested_json_in_an_unknown_key_is_400_naming_the_line(server_factory, env, nested):
    server = server_factory(env=env)
    response = _around(server, ('{%s}\n{%s,"extra":%s}\n{%s}\n' % (T, T, nested, T)).encode())
    assert response.status_code == 400
    error = response.json()
    assert error["line"] == 2 and "nested" in error["error"]
    assert "Traceback" not in server.log.read_text()


def _ten_minutes_apart(n: int) -> list[dict]:
    return [{"time": "2024-07-02T%02d:%02d:00Z" % (i // 6, i % 6 * 10), "id": i} for i in range(n)]


@pytest.mark.parametrize("env", PATHS, ids=PATH_IDS)
def test_a_request_opening_more_windows_than_the_limit_is_413_naming_the_line(server_factory, env):
    server = server_factory("--max-windows-per-request", "10", env=env)
    response = _around(server, b"\n" + ndjson(_ten_minutes_apart(30)))  # a blank first line: body line numbers
    assert response.status_code == 413
    error = response.json()
    assert error["line"] == 12  # the 11th event (line 12) would open the 11th window
    assert "10" in error["error"] and "--max-windows-per-request" in error["error"]


def test_the_windows_limit_allows_exactly_the_limit_and_comes_from_the_environment(server_factory):
    server = server_factory(env={"BEA_MAX_WINDOWS_PER_REQUEST": "10"})
    assert server.post(ndjson(_ten_minutes_apart(11))).status_code == 413
    assert server.post(ndjson(_ten_minutes_apart(10))).json() == {"accepted": 10}
    assert_stops_holding(server, _ten_minutes_apart(10))


def test_common_body_mistakes_are_answered_with_what_is_expected(server_factory):
    from test_decode import MISTAKES

    server = server_factory()
    for body, says in MISTAKES.values():
        answer = server.post(body.encode())
        assert answer.status_code == 400 and says in answer.json()["error"] and answer.json()["line"] == 1
