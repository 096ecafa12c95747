"""The HTTP contract on a raw socket: keep-alive, pipelining, chunked bodies, Expect: 100-continue,
HEAD, and 413 before an oversize body is sent. The server writes each answer in one piece (its
head held for its body), so these check that nothing is lost, reordered or held back by that."""

from __future__ import annotations

import json

from model import ndjson
from rawhttp import Connection
from servers import assert_stops_holding
from snapshots import csv_files

EVENTS = [{"time": "2024-07-01T02:03:04Z", "id": i} for i in range(3)]


def _post(body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server_factory):
    server = server_factory()
    conn = Connection(server.port)
    for event in EVENTS[:2]:  # one after another on one connection
        conn.send(_post(ndjson([event])))
        status, headers, body = conn.response()
        assert (status, json.loads(body)) == (200, {"accepted": 1}) and headers.get("connection") != "close"
    conn.send(_post(ndjson(EVENTS[2:])) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _post(b""))  # pipelined
    assert [conn.answer() for _ in range(3)] == [
        (200, {"accepted": 1}),
        (200, {"status": "ok"}),
        (200, {"accepted": 0}),
    ]
    conn.close()
    assert_stops_holding(server, EVENTS)


def test_a_chunked_body_is_read_whole(server_factory):
    server = server_factory()
    lines = ndjson(EVENTS)
    chunks = [lines[:10], lines[10:]]
    conn = Connection(server.port)
    conn.send(
        b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    )
    assert conn.answer() == (200, {"accepted": 3})
    conn.close()
    assert_stops_holding(server, EVENTS)


def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(server_factory):
    server = server_factory()
    body = ndjson(EVENTS)
    conn = Connection(server.port)
    conn.send(_post(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
    assert conn.head() == b"HTTP/1.1 100 Continue\r\n\r\n"  # at once, not held back
    conn.send(body)
    assert conn.answer() == (200, {"accepted": 3})
    conn.close()


def test_an_oversize_body_is_refused_before_it_is_sent_and_head_requests_are_answered(server_factory):
    server = server_factory("--max-body", "1KiB")
    conn = Connection(server.port)
    conn.send(b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    status, headers, body = conn.response()  # no 100 Continue, no body sent: the answer comes first
    assert status == 413 and "limit of 1024 bytes" in json.loads(body)["error"]
    # The client may still send the body it held back: that connection is not reused.
    assert headers["connection"] == "close" and conn.sock.recv(1) == b""
    conn.close()
    conn = Connection(server.port)
    conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.head().startswith(b"HTTP/1.1 200 ")  # a head with no body still goes out
    conn.close()


def test_the_ingest_route_is_found_as_a_router_would_and_other_methods_get_405(server_factory):
    server = server_factory()
    conn = Connection(server.port)
    conn.send(_post(ndjson(EVENTS[:1])).replace(b"/user/event", b"/user/%65vent?source=a"))  # escaped, with a query
    assert conn.answer() == (200, {"accepted": 1})
    conn.send(b"GET /user/event HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = conn.response()
    assert (status, headers["allow"]) == (405, "POST")
    conn.send(_post(ndjson(EVENTS[1:]), "Connection: close\r\n"))
    status, headers, body = conn.response()
    assert (status, json.loads(body), headers["connection"]) == (200, {"accepted": 2}, "close")
    assert conn.sock.recv(1) == b""
    conn.close()
    assert_stops_holding(server, EVENTS)


def test_a_long_queue_of_pipelined_refusals_is_answered_in_order(server_factory):
    """Each answer starts the next queued request on a later turn of the loop: a thousand
    requests refused at once do not become a thousand nested calls."""
    server = server_factory()
    conn = Connection(server.port)
    refused = b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 0\r\n\r\n"
    conn.send(_post(ndjson(EVENTS)) + refused * 1000 + _post(b""))
    assert conn.answer() == (200, {"accepted": 3})
    statuses = [conn.answer()[0] for _ in range(1000)]
    assert statuses == [415] * 1000
    assert conn.answer() == (200, {"accepted": 0})
    conn.close()
    assert_stops_holding(server, EVENTS)


# -- issue 19: what a client of an unusual shape must still get ----------------------------------

H2C = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


def test_an_h2c_upgrade_is_ignored_and_the_request_served_as_http_1_1(server_factory):
    """`curl --http2` over http asks for h2c; llhttp hands such a body over as upgrade data. The
    body must be read as the request's, and the requests pipelined after it answered."""
    server = server_factory()
    conn = Connection(server.port)
    chunked = ndjson(EVENTS[2:])
    conn.send(
        _post(ndjson(EVENTS[:2]), H2C)
        + (
            f"POST /user/event HTTP/1.1\r\nHost: x\r\n{H2C}Transfer-Encoding: chunked\r\n\r\n{len(chunked):x}\r\n"
        ).encode()
        + chunked
        + b"\r\n0\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
    )
    status, headers, body = conn.response()
    assert (status, json.loads(body)) == (200, {"accepted": 2})
    assert "upgrade" not in headers  # no 101: it stays HTTP/1.1
    assert conn.answer() == (200, {"accepted": 1})
    assert conn.answer() == (200, {"status": "ok"})
    conn.close()
    assert_stops_holding(server, EVENTS)


def _many_windows(n: int) -> bytes:
    """A request that opens n windows (ten minutes apart): its round takes the writer a while."""
    return ndjson(
        [{"time": f"2024-07-{1 + i // 144:02d}T{i // 6 % 24:02d}:{i % 6 * 10:02d}:00Z", "id": i} for i in range(n)]
    )


def test_a_pipelined_request_times_out_only_in_its_turn_and_after_the_answers_before_it(server_factory):
    """Request 1 opens thousands of windows; request 2's body never comes. Its 408 must follow
    request 1's 200, and its body timer must not run while request 1 is written."""
    server = server_factory("--body-timeout", "300ms", "--max-windows-per-request", "5000")
    first = _many_windows(4000)
    conn = Connection(server.port)
    conn.send(_post(first) + b"POST /user/event HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
    assert conn.answer() == (200, {"accepted": 4000})
    status, headers, body = conn.response()
    assert status == 408 and b"request body" in body and headers["connection"] == "close"
    conn.close()
    assert server.stop() == 0
    assert sum(len(content.splitlines()) for content in csv_files(server.output).values()) == 4000


def test_a_malformed_request_behind_one_being_written_is_answered_after_it(server_factory):
    server = server_factory("--max-windows-per-request", "5000")
    conn = Connection(server.port)
    conn.send(_post(_many_windows(4000)) + b"NOT HTTP AT ALL\r\n\r\n")
    assert conn.answer() == (200, {"accepted": 4000})
    status, headers, body = conn.response()
    assert status == 400 and headers["connection"] == "close"
    assert conn.sock.recv(1) == b""
    conn.close()
    # A body that breaks its chunked framing: that request gets the 400, in its turn.
    conn = Connection(server.port)
    conn.send(
        _post(_many_windows(10)) + b"POST /user/event HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert conn.answer() == (200, {"accepted": 10})
    assert conn.response()[0] == 400
    conn.close()
    assert server.stop() == 0
    assert sum(len(content.splitlines()) for content in csv_files(server.output).values()) == 4010


def test_a_long_url_is_414_and_large_headers_431(server_factory):
    server = server_factory("--max-header-size", "4KiB")
    conn = Connection(server.port)
    conn.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (414, "close")
    conn.close()
    conn = Connection(server.port)
    conn.send(_post(ndjson(EVENTS), "X-Filler: " + "b" * 5000 + "\r\n"))
    assert conn.answer()[0] == 431
    conn.close()
    assert server.post(ndjson(EVENTS)).status_code == 200
    assert_stops_holding(server, EVENTS)


def test_connect_is_405_and_the_server_serves_on(server_factory):
    server = server_factory()
    conn = Connection(server.port)
    conn.send(b"CONNECT x:80 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[0] == 405
    conn.close()
    assert server.post(ndjson(EVENTS)).status_code == 200
    assert_stops_holding(server, EVENTS)


def test_an_application_request_broken_mid_body_is_answered_after_the_ingest_before_it(server_factory):
    server = server_factory("--max-windows-per-request", "5000")
    conn = Connection(server.port)
    conn.send(
        _post(_many_windows(4000)) + b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    assert conn.answer() == (200, {"accepted": 4000})
    assert conn.response()[0] == 400
    conn.close()
    assert server.stop() == 0
    assert sum(len(content.splitlines()) for content in csv_files(server.output).values()) == 4000


def test_a_post_to_the_ingest_path_with_a_trailing_newline_is_404(server_factory):
    server = server_factory()
    response = server.client.post("/user/event%0a", content=ndjson(EVENTS))
    assert response.status_code == 404
    assert_stops_holding(server, [])
    assert "Traceback" not in server.log.read_text()
