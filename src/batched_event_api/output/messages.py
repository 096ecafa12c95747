"""What the server and its upload process (process.py) tell each other: typed messages, one codec
(msgpack), over one socket pair.

    server -> child   Wake  Pinned(names)  Drain(seconds)  Stop
    child -> server   Ready  Refused(text)  AskPinned  Drained(ok)  Report(counts, uploads, failures)
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection

import msgspec


class Wake(msgspec.Struct, tag=True, frozen=True):
    """Windows were published (or the journal let uploaded ones go): look for them now."""


class Pinned(msgspec.Struct, tag=True, frozen=True):
    """The windows the journal's last record names (the answer to AskPinned)."""

    names: list[str]


class Drain(msgspec.Struct, tag=True, frozen=True):
    """Wait up to `seconds` for the queue to empty, then answer Drained."""

    seconds: float


class Stop(msgspec.Struct, tag=True, frozen=True):
    """Stop uploading and exit."""


class Ready(msgspec.Struct, tag=True, frozen=True):
    """The child runs: its store is configured and its uploader started."""


class Refused(msgspec.Struct, tag=True, frozen=True):
    """The store's configuration is wrong (the child exits): why."""

    text: str


class AskPinned(msgspec.Struct, tag=True, frozen=True):
    """Which windows does the journal's last record name? (asked at each removal, never cached)"""


class Drained(msgspec.Struct, tag=True, frozen=True):
    """The answer to Drain: whether the queue emptied in time."""

    ok: bool


class Report(msgspec.Struct, tag=True, frozen=True):
    """What the uploader did since the last report (the child gathers many in one message)."""

    counts: tuple[int, int, int] | None  # windows and bytes waiting, windows awaiting release; None: unchanged
    uploads: list[tuple[str, float]]  # (result, seconds) per upload
    failures: dict[str, int]  # failed turns by stage


class ChildArgs(msgspec.Struct, frozen=True):
    """What the child is started with (its command line, as JSON)."""

    directory: str  # the state directory
    store: str  # where windows go: s3://BUCKET/PREFIX/, or a local output directory
    concurrency: int
    nice: int
    multipart_from: int
    part_size: int
    log_format: str
    log_level: str
    parent: int  # the server's pid: the child exits when it is no longer its parent
    format: str = "csv"  # what a window becomes (config.Format)
    compression: str = "none"  # of a Parquet file (config.Compress)
    header: bool = False  # the windows' CSV starts with a header row
    partition: str | None = None  # the --partition template
    file_mode: int = 0o600  # of the files and directories made in a local output
    max_body: int | None = None  # --max-body: bounds the CSV row a conversion gathers


ToChild = Wake | Pinned | Drain | Stop
ToServer = Ready | Refused | AskPinned | Drained | Report
Message = ToChild | ToServer

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class Channel:
    """One end of the socket pair: whole messages, sent from any thread. OSError, ValueError or
    EOFError when the other end is gone."""

    def __init__(self, fd: int) -> None:
        self._conn = Connection(fd)
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        data = _encoder.encode(message)
        with self._lock:
            self._conn.send_bytes(data)

    def recv(self) -> Message:
        return _decoder.decode(self._conn.recv_bytes())

    def close(self) -> None:
        self._conn.close()
