"""What `serve` takes and checks before the service starts, each failure one line: the port, the
output directory, the header rows of the files already there."""

from __future__ import annotations

import errno
import gzip
import io
import os
import socket
from pathlib import Path
from typing import BinaryIO

import click
import zstandard

from batched_event_api.commit.disk import LocalDisk
from batched_event_api.commit.inventory import finished_files, read_status
from batched_event_api.commit.journal import JOURNAL, JournalDamaged
from batched_event_api.events.render import COLUMNS


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound (port 0: any free one); a failure is one line and exit 1."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def make_directory(directory: Path) -> None:
    """The output (or state) directory, created if missing."""
    if directory.exists() and not directory.is_dir():
        raise click.ClickException(f"cannot write to {directory}: it is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the output directory {directory}: {exc.strerror}") from None


def header_mismatch(directory: Path, header: bool) -> str | None:
    """Why serving `directory` with (or without) --header would mix files with and without a
    header row, judged by its newest committed file (readers of *.csv then fail, or read a header
    as data); None when it would not."""
    files = finished_files(directory)
    if not files:
        return None
    newest = max(files, key=lambda name: files[name].st_mtime_ns)
    try:
        fd, _ = LocalDisk(directory).open_read(newest)
        with open(fd, "rb") as raw:
            first_line = _decoded(raw, newest).readline()
    except (OSError, EOFError, zstandard.ZstdError) as exc:  # another user's; not gzip/zstd, or cut short
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "truncated"
        return (
            f"cannot serve from {directory}: its newest file, {newest}, cannot be read to check its header "
            f"row ({reason}); move it away, or use another directory"
        )
    has_header = first_line == (",".join(COLUMNS) + "\n").encode()
    if has_header == header:
        return None
    it, option = ("has no header row", "without --header") if header else ("starts with a header row", "with --header")
    return (
        f"cannot serve from {directory} {'with' if header else 'without'} --header: its newest file, {newest}, "
        f"{it}, and one directory of both kinds trips readers of *.csv; serve it {option}, or use another directory"
    )


def unfinished_direct_run(directory: Path) -> str | None:
    """Why `directory` cannot be the output of a finish stage now: a server that wrote into it
    directly (plain CSV) left an open window or a publish under way there, which only such a
    server commits; None when it did not."""
    if not os.path.lexists(directory / JOURNAL):
        return None
    try:
        state = read_status(directory)
    except (OSError, JournalDamaged) as exc:
        return f"cannot use {directory} as the output: its journal cannot be read ({exc})"
    if not state.open_windows and not state.pending_publish:
        return None
    return (
        f"cannot use {directory} as the output of --format parquet or --partition: it holds acknowledged "
        "events of a server that wrote into it directly (open windows or a publish under way); serve it "
        "once without --format parquet and --partition to commit them, then restart with them"
    )


def _decoded(raw: BinaryIO, name: str) -> BinaryIO:
    """A window file's CSV, read through its compression (by its name's suffix)."""
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if name.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw
