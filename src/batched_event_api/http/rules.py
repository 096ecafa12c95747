"""The rules an ingest request is held to, apart from any server: its path, the media types and
encodings taken, what its head must say, and how its body is read (decompressed, within the size
limit and the pending-bytes budget)."""

from __future__ import annotations

import zlib
from typing import NamedTuple

from batched_event_api.errors import ClientError
from batched_event_api.http.auth import BearerAuth
from batched_event_api.http.pending import Hold

INGEST_PATH = "/user/event"

# The media types taken as NDJSON, each group as the OpenAPI document describes it: lines of events,
# or a string of lines. What curl sends without -H (application/x-www-form-urlencoded), and no
# Content-Type at all, are taken too, as the reference did, without being advertised; types that
# are clearly something else are refused.
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")
TEXT_TYPES = ("application/json", "text/plain")
UNADVERTISED_TYPES = ("", "application/x-www-form-urlencoded")
ACCEPTED_TYPES = frozenset(NDJSON_TYPES + TEXT_TYPES + UNADVERTISED_TYPES)

MAX_URL = 8 * 1024  # nginx's default large_client_header_buffers line


class RequestHead(NamedTuple):
    key: str | None  # the Idempotency-Key
    gzip: bool
    length: int | None  # the Content-Length, when given


def check_head(headers: list[tuple[bytes, bytes]], auth: BearerAuth, limit: int) -> RequestHead:
    """What the headers say of an ingest request, or the ClientError it is refused with."""
    found = {name: value for name, value in headers}  # names come lower-cased from the protocol
    auth.check(found.get(b"authorization", b""))
    media_type = found.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise ClientError(f"unsupported Content-Type {media_type!r}: send NDJSON as application/x-ndjson", status=415)
    encoding = found.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise ClientError(f"unsupported Content-Encoding {encoding!r}: use gzip or none", status=415)
    key: str | None = None
    raw_key = found.get(b"idempotency-key")
    if raw_key is not None:
        key = raw_key.decode("latin-1")
        if not (0 < len(key) <= 200 and key.isprintable()):
            raise ClientError("Idempotency-Key must be 1 to 200 printable characters", field="Idempotency-Key")
    declared = found.get(b"content-length", b"")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > limit and encoding != "gzip":
        raise too_large(limit)
    return RequestHead(key, encoding == "gzip", length)


def too_large(limit: int) -> ClientError:
    return ClientError(f"request body larger than the limit of {limit} bytes", status=413)


class BodyReader:
    """A request body taken as it arrives, never more than the limit (after decompression),
    counted against the pending-bytes budget as it arrives: bytes a client has only announced
    hold nothing (a few connections declaring large bodies and sending none would otherwise lock
    everyone out). A Content-Length that cannot fit beside what is held now is refused before
    any of the body is read."""

    __slots__ = ("_limit", "_hold", "_gunzip", "body")

    def __init__(self, limit: int, hold: Hold, head: RequestHead) -> None:
        self._limit = limit
        self._hold = hold
        if head.length is not None and not head.gzip:
            hold.check(head.length)
        self._gunzip = _Gunzip() if head.gzip else None
        self.body = bytearray()  # grows in place: no second copy of a large body

    def feed(self, chunk: bytes) -> None:
        if self._gunzip is not None:
            chunk = self._gunzip.feed(chunk, self._limit - len(self.body), self._limit)
        if len(self.body) + len(chunk) > self._limit:
            raise too_large(self._limit)
        self._hold.take(len(chunk))
        self.body += chunk

    def finish(self) -> bytearray:
        if self._gunzip is not None and not self._gunzip.complete:
            raise ClientError("truncated gzip body", status=400)
        return self.body


class _Gunzip:
    """Incremental gzip decoding (several members allowed) that stops at the size limit."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=31)
        self._started = False

    @property
    def complete(self) -> bool:
        return not self._started or self._inflater.eof

    def feed(self, data: bytes, room: int, limit: int) -> bytes:
        out: list[bytes] = []
        try:
            while data:
                if self._inflater.eof:  # another gzip member follows
                    self._inflater = zlib.decompressobj(wbits=31)
                self._started = True
                piece = self._inflater.decompress(data, room + 1)
                room -= len(piece)
                if room < 0:
                    raise too_large(limit)
                out.append(piece)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error as exc:
            raise ClientError(f"corrupt gzip body: {exc}", status=400) from None
        return b"".join(out)


_UPGRADE_HEADERS = (b"upgrade", b"http2-settings")


def head_without_upgrade(method: bytes, url: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request head written again without its upgrade (h2c): the upgrade headers and their
    Connection tokens dropped, so that it is served as HTTP/1.1, as RFC 9110 allows."""
    lines = [method + b" " + url + b" HTTP/" + version]
    for name, value in headers:
        if name == b"connection":
            tokens = [t for t in value.split(b",") if t.strip().lower() not in _UPGRADE_HEADERS]
            if not tokens:
                continue
            value = b",".join(tokens)
        elif name in _UPGRADE_HEADERS:
            continue
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"
