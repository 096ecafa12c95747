"""The request rules, the answers and the Starlette endpoints, without a server: heads taken and
refused, bodies (gzip or not) within the limits, the JSON of every answer."""

from __future__ import annotations

import asyncio
import gzip
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from batched_event_api.errors import ClientError
from batched_event_api.http import answers, openapi, routes
from batched_event_api.http.auth import BearerAuth
from batched_event_api.http.pending import PendingBytes
from batched_event_api.http.rules import (
    ACCEPTED_TYPES,
    INGEST_PATH,
    NDJSON_TYPES,
    TEXT_TYPES,
    BodyReader,
    RequestHead,
    check_head,
    head_without_upgrade,
)

NO_AUTH = BearerAuth(None)
LIMIT = 1000


def _refusal(headers: list[tuple[bytes, bytes]], auth: BearerAuth = NO_AUTH) -> ClientError:
    with pytest.raises(ClientError) as refused:
        check_head(headers, auth, LIMIT)
    return refused.value


@pytest.mark.parametrize("content_type", sorted(ACCEPTED_TYPES) + ["Application/X-NDJSON; charset=utf-8"])
def test_a_head_with_a_type_taken_as_ndjson_is_accepted(content_type):
    headers = [(b"content-type", content_type.encode())] if content_type else []
    assert check_head(headers, NO_AUTH, LIMIT) == RequestHead(None, False, None)


@pytest.mark.parametrize("content_type", [b"application/xml", b"multipart/form-data; boundary=x", b"image/png"])
def test_a_head_with_another_type_is_refused_415(content_type):
    assert _refusal([(b"content-type", content_type)]).status == 415


@pytest.mark.parametrize("encoding, is_gzip", [(b"gzip", True), (b" GZIP ", True), (b"identity", False), (b"", False)])
def test_gzip_and_identity_encodings_are_accepted(encoding, is_gzip):
    assert check_head([(b"content-encoding", encoding)], NO_AUTH, LIMIT).gzip is is_gzip


@pytest.mark.parametrize("encoding", [b"br", b"deflate", b"gzip, br"])
def test_other_encodings_are_refused_415(encoding):
    assert _refusal([(b"content-encoding", encoding)]).status == 415


def test_a_configured_token_is_required():
    auth = BearerAuth("secret")
    for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"secret")]):
        refused = _refusal(headers, auth)
        assert refused.status == 401 and refused.headers == {"www-authenticate": 'Bearer realm="batched-event-api"'}
    assert check_head([(b"authorization", b"Bearer secret")], auth, LIMIT).key is None


def test_an_idempotency_key_is_1_to_200_printable_characters():
    assert check_head([(b"idempotency-key", b"k" * 200)], NO_AUTH, LIMIT).key == "k" * 200
    for key in (b"", b"k" * 201, b"a\x01b"):
        refused = _refusal([(b"idempotency-key", key)])
        assert (refused.status, refused.field) == (400, "Idempotency-Key")


def test_a_declared_length_over_the_limit_is_refused_before_the_body_unless_gzip():
    assert check_head([(b"content-length", b"1000")], NO_AUTH, LIMIT).length == 1000
    assert _refusal([(b"content-length", b"1001")]).status == 413
    head = check_head([(b"content-length", b"5000"), (b"content-encoding", b"gzip")], NO_AUTH, LIMIT)
    assert (head.length, head.gzip) == (5000, True)  # the limit is on the decompressed body
    assert check_head([(b"content-length", b"-1")], NO_AUTH, LIMIT).length is None


def _reader(head: RequestHead, pending: int = 10_000) -> tuple[BodyReader, PendingBytes]:
    budget = PendingBytes(pending)
    return BodyReader(LIMIT, budget.hold(), head), budget


def test_a_body_is_taken_in_pieces_and_counted_as_it_arrives():
    reader, budget = _reader(RequestHead(None, False, 30))
    assert budget.used == 0  # announced bytes hold nothing
    reader.feed(b"a" * 10)
    reader.feed(b"b" * 20)
    assert budget.used == 30 and reader.finish() == b"a" * 10 + b"b" * 20


def test_a_body_past_the_limit_is_refused_413():
    reader, _ = _reader(RequestHead(None, False, None))
    reader.feed(b"x" * LIMIT)
    with pytest.raises(ClientError) as refused:
        reader.feed(b"x")
    assert refused.value.status == 413


def test_a_body_that_cannot_fit_the_pending_budget_is_refused_503():
    with pytest.raises(ClientError) as refused:
        _reader(RequestHead(None, False, 600), pending=500)  # by its declared length, before any byte
    assert refused.value.status == 503 and refused.value.headers == {"retry-after": "1"}
    reader, budget = _reader(RequestHead(None, False, None), pending=500)
    reader.feed(b"x" * 500)
    with pytest.raises(ClientError) as refused:
        reader.feed(b"x")  # by what arrived
    assert refused.value.status == 503 and budget.used == 500


def test_a_gzip_body_is_decompressed_in_pieces_member_after_member():
    body = b'{"time":"2024-07-01T00:00:00Z"}\n' * 10
    compressed = gzip.compress(body[:100]) + gzip.compress(body[100:])
    reader, budget = _reader(RequestHead(None, True, len(compressed)))
    for i in range(0, len(compressed), 7):
        reader.feed(compressed[i : i + 7])
    assert reader.finish() == body and budget.used == len(body)


def test_an_empty_gzip_body_is_an_empty_body():
    reader, _ = _reader(RequestHead(None, True, 0))
    assert reader.finish() == b""


def test_a_truncated_or_corrupt_gzip_body_is_refused_400():
    reader, _ = _reader(RequestHead(None, True, None))
    reader.feed(gzip.compress(b"x" * 100)[:-4])
    with pytest.raises(ClientError, match="truncated gzip body") as refused:
        reader.finish()
    assert refused.value.status == 400
    reader, _ = _reader(RequestHead(None, True, None))
    with pytest.raises(ClientError, match="corrupt gzip body") as refused:
        reader.feed(b"\x1f\x8b" + b"\xff" * 20)
    assert refused.value.status == 400


def test_a_gzip_body_is_refused_413_once_it_decompresses_past_the_limit():
    reader, budget = _reader(RequestHead(None, True, None))
    with pytest.raises(ClientError) as refused:
        reader.feed(gzip.compress(b"x" * 100_000))  # a few hundred bytes that would be 100 kB
    assert refused.value.status == 413 and budget.used == 0


def test_a_head_written_again_without_its_upgrade():
    headers = [
        (b"host", b"x"),
        (b"connection", b"Upgrade, HTTP2-Settings, keep-alive"),
        (b"upgrade", b"h2c"),
        (b"http2-settings", b"AAMAAABkAAQCAAAAAAIAAAAA"),
    ]
    assert head_without_upgrade(b"POST", b"/user/event", b"1.1", headers) == (
        b"POST /user/event HTTP/1.1\r\nhost: x\r\nconnection:  keep-alive\r\n\r\n"
    )
    only_upgrade = [(b"connection", b"upgrade"), (b"upgrade", b"h2c")]
    assert head_without_upgrade(b"GET", b"/", b"1.0", only_upgrade) == b"GET / HTTP/1.0\r\n\r\n"


# The whole answers the server closes a connection with, as they were written by hand before.
_CLOSING = b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n%s"


def _closing(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + _CLOSING % (len(body), extra, body)


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            answers.HEADERS_TIMED_OUT,
            _closing(b"408 Request Timeout", b'{"error":"timed out reading the request headers"}'),
        ),
        (answers.BODY_TIMED_OUT, _closing(b"408 Request Timeout", b'{"error":"timed out reading the request body"}')),
        (
            answers.BODY_TOO_SLOW,
            _closing(b"408 Request Timeout", b'{"error":"the request body arrived slower than --min-body-rate"}'),
        ),
        (
            answers.TOO_MANY_CONNECTIONS,
            _closing(
                b"503 Service Unavailable", b'{"error":"too many connections; retry shortly"}', b"retry-after: 1\r\n"
            ),
        ),
        (answers.INVALID, _closing(b"400 Bad Request", b'{"error":"invalid HTTP request"}')),
        (answers.URL_TOO_LONG, _closing(b"414 URI Too Long", b'{"error":"request URL longer than 8192 bytes"}')),
        (answers.NOT_ALLOWED, _closing(b"405 Method Not Allowed", b'{"error":"method not allowed"}')),
        (
            answers.SHUTTING_DOWN,
            _closing(
                b"503 Service Unavailable", b'{"error":"the server is shutting down; retry"}', b"retry-after: 1\r\n"
            ),
        ),
        (
            answers.head_too_large(4096),
            _closing(
                b"431 Request Header Fields Too Large",
                b'{"error":"request headers larger than 4096 bytes (--max-header-size)"}',
            ),
        ),
    ],
)
def test_closing_answers_are_written_as_before(answer, expected):
    assert answer == expected


def test_an_error_body_names_the_line_and_field_and_is_what_starlette_would_write():
    error = ClientError('bad "time" \u00e9\n', line=3, field="time")
    assert answers.error_body(error) == b'{"error":"bad \\"time\\" \xc3\xa9\\n","line":3,"field":"time"}'
    assert answers.error_body(error) == JSONResponse(error.to_json()).body
    payload = {"status": "unavailable", "error": "\u2028\x7f", "backlog": {"windows": 1, "bytes": 2}}
    assert answers.json_body(payload) == JSONResponse(payload).body


def _request(route: object, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    app = Starlette()
    app.state.route = route
    app.state.document = {"openapi": "3.1.0"}
    return Request({"type": "http", "app": app, "method": "GET", "path": path, "headers": headers or []})


def test_the_endpoints_answer_as_starlettes_json_responses_did():
    request = _request(SimpleNamespace(auth=BearerAuth("secret")), "/metrics")
    refused = asyncio.run(routes.metrics(request))
    expected = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
    assert (refused.status_code, refused.body) == (401, expected.body)
    assert refused.headers["www-authenticate"] == 'Bearer realm="batched-event-api"'
    assert refused.headers["content-type"] == "application/json"

    not_found = asyncio.run(routes.not_found(request, HTTPException(404)))
    assert (not_found.status_code, not_found.body) == (
        404,
        JSONResponse({"error": f"no such route: events go to POST {INGEST_PATH}; see /docs"}).body,
    )
    not_allowed = asyncio.run(routes.method_not_allowed(request, HTTPException(405, headers={"allow": "POST"})))
    assert (not_allowed.status_code, not_allowed.body, not_allowed.headers["allow"]) == (
        405,
        b'{"error":"method not allowed"}',
        "POST",
    )
    assert asyncio.run(routes.healthz(request)).body == b'{"status":"ok"}'
    assert asyncio.run(routes.openapi_document(request)).body == b'{"openapi":"3.1.0"}'


def test_the_documented_request_types_are_the_advertised_ones_taken():
    content = openapi.DOCUMENT["paths"][INGEST_PATH]["post"]["requestBody"]["content"]
    assert list(content) == [*NDJSON_TYPES, *TEXT_TYPES]
    assert set(content) <= ACCEPTED_TYPES
