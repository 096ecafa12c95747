"""Every JSON answer's body, written one way (the ingest route, the Starlette routes and the
server's own refusals), and the whole answers the server closes a connection with."""

from __future__ import annotations

from typing import Any

import msgspec

from batched_event_api.errors import RETRY_AFTER, ClientError
from batched_event_api.http.rules import MAX_URL

_JSON = msgspec.json.Encoder()

# The reason phrases of the answers written whole (uvicorn's table has 414's older "Request-URI").
_PHRASES = {
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def json_body(payload: dict[str, Any]) -> bytes:
    """A JSON answer's body: compact, UTF-8, as Starlette's JSONResponse writes it."""
    return _JSON.encode(payload)


def error_body(error: ClientError) -> bytes:
    """The body of an error answer: {"error": …} and the line and field the error names."""
    return _JSON.encode(error.to_json())


def closing_answer(error: ClientError) -> bytes:
    """A whole answer that the connection is closed after, sent before any request is served
    (no date or server header: written without the server's help)."""
    body = error_body(error)
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers.items())
    return (
        f"HTTP/1.1 {error.status} {_PHRASES[error.status]}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    ).encode() + body


HEADERS_TIMED_OUT = closing_answer(ClientError("timed out reading the request headers", status=408))
BODY_TIMED_OUT = closing_answer(ClientError("timed out reading the request body", status=408))
BODY_TOO_SLOW = closing_answer(ClientError("the request body arrived slower than --min-body-rate", status=408))
TOO_MANY_CONNECTIONS = closing_answer(
    ClientError("too many connections; retry shortly", status=503, headers={"retry-after": "1"})
)
INVALID = closing_answer(ClientError("invalid HTTP request", status=400))
URL_TOO_LONG = closing_answer(ClientError(f"request URL longer than {MAX_URL} bytes", status=414))
NOT_ALLOWED = closing_answer(ClientError("method not allowed", status=405))
SHUTTING_DOWN = closing_answer(
    ClientError("the server is shutting down; retry", status=503, headers={"retry-after": RETRY_AFTER})
)


def head_too_large(max_head: int) -> bytes:
    return closing_answer(ClientError(f"request headers larger than {max_head} bytes (--max-header-size)", status=431))
