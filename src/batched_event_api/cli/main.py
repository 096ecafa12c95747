"""Command line: `serve` runs the service, `send` feeds it files. Every option has an environment variable."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from click.shell_completion import (
    BashComplete,
    FishComplete,
    ShellComplete,
    ZshComplete,
    add_completion_class,
)

from batched_event_api import __version__
from batched_event_api.config import Align, BucketUrl, Compress, Settings, SyncMany
from batched_event_api.events.timestamps import MAX_INTERVAL_NS
from batched_event_api.logs import configure_logging

_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_DURATION = re.compile(r"(?:[0-9]*\.?[0-9]+(?:ms|s|m|h))+|[0-9]*\.?[0-9]+")  # 300, 5m, 1h30m, 1m30.5s
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ms|s|m|h)?")
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Size(click.ParamType):
    name = "BYTES"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        m = _SIZE.fullmatch(str(value))
        unit = (m.group(2) or "").lower() if m else ""
        if m is None or unit not in _SIZE_UNITS:
            self.fail(f"{value!r} is not a size like 1048576, 64MiB or 10MB", param, ctx)
        return int(m.group(1)) * _SIZE_UNITS[unit]


class Duration(click.ParamType):
    name = "DURATION"

    def __init__(self, within: tuple[float, float, str] | None = None) -> None:
        self.within = within  # (least, most, how the bounds are said), when there are bounds

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().replace(" ", "")
        if _DURATION.fullmatch(text) is None:
            self.fail(f"{value!r} is not a duration like 300, 300s, 5m, 1h30m or 250ms", param, ctx)
        seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        if seconds <= 0:
            self.fail("must be greater than zero", param, ctx)
        if self.within is not None and not self.within[0] <= seconds <= self.within[1]:
            self.fail(f"{value!r} is not {self.within[2]}", param, ctx)
        return seconds


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="batched-event-api")
def main() -> None:
    """Receive user events as NDJSON over HTTP and write them as CSV files, one per window of event time."""


class _EnvOption(click.Option):
    """An option with an environment variable; an error names the variable only when the value
    came from it (click names it whenever one is configured)."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = click.Parameter.get_error_hint(self, ctx)
        if ctx is not None and ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT:
            hint += f" (from the environment variable {self.envvar})"
        return hint


def _program_path() -> str | None:
    """This command's absolute path as run (`.venv/bin/batched-event-api`), or None under
    `python -m` (where argv[0] is a path to __main__.py)."""
    return os.path.abspath(sys.argv[0]) if Path(sys.argv[0]).name == "batched-event-api" else None


def _completion_by_path(base: type[ShellComplete], call: str, fallback: str) -> None:
    """click's completion script for `base`'s shell, calling this program by its absolute path
    instead of by the name the shell saw (bash's $1) or by `batched-event-api`: the name is on PATH
    only in an active venv, so TAB elsewhere ran `env: 'batched-event-api': No such file`."""

    class ByPath(base):  # type: ignore[valid-type,misc]
        source_template = base.source_template.replace(call, call.replace(fallback, "%(program)s"))

        def source_vars(self) -> Any:
            program = _program_path()
            vars = super().source_vars()
            return {**vars, "program": shlex.quote(program) if program else fallback % vars}

    add_completion_class(ByPath, base.name)


_completion_by_path(BashComplete, "=bash_complete $1)", "$1")
_completion_by_path(ZshComplete, "=zsh_complete %(prog_name)s)", "%(prog_name)s")
_completion_by_path(FishComplete, "(commandline -t) %(prog_name)s)", "%(prog_name)s")


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"BEA_{name}", "show_envvar": True, "cls": _EnvOption}


@main.command()
@click.option(
    "-o",
    "--output",
    default="./data",
    help="Directory for the CSV files (created if missing), or s3://BUCKET/PREFIX/ for a bucket (configured "
    "by the AWS_* variables; see the README).",
    **_env("OUTPUT"),
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With a bucket as output: the directory for the journal, the open window and committed windows "
    "not yet uploaded [default: ./state]. A local output keeps these beside its files.",
    **_env("STATE_DIR"),
)
@click.option(
    "--max-backlog",
    type=Size(),
    default="1GiB",
    help="With a bucket as output: bytes of committed windows waiting for the bucket; beyond it requests are "
    "answered 503 with Retry-After.",
    **_env("MAX_BACKLOG"),
)
@click.option(
    "--multipart-threshold",
    type=Size(),
    default="16MiB",
    help="With a bucket as output: windows this large or larger go up as multipart uploads streamed from "
    "their file (the AWS CLI's multipart_threshold).",
    **_env("MULTIPART_THRESHOLD"),
)
@click.option(
    "--multipart-chunksize",
    type=Size(),
    default="16MiB",
    help="With a bucket as output: the size of each part of a multipart upload, at least 5MiB (the AWS "
    "CLI's multipart_chunksize).",
    **_env("MULTIPART_CHUNKSIZE"),
)
@click.option(
    "--upload-concurrency",
    type=click.IntRange(1, 64),
    default=4,
    help="With a bucket as output: windows uploaded side by side (the AWS CLI's max_concurrent_requests).",
    **_env("UPLOAD_CONCURRENCY"),
)
@click.option(
    "--upload-nice",
    type=click.IntRange(0, 19),
    default=10,
    help="With a bucket as output: how much lower the upload process's CPU priority is than the "
    "server's (nice), so that uploads take the CPU ingest leaves; 0: the same priority.",
    **_env("UPLOAD_NICE"),
)
@click.option(
    "--drain-timeout",
    type=Duration(),
    default="30s",
    help="With a bucket as output: how long a shutdown waits for uploads (the rest go at the next start).",
    **_env("DRAIN_TIMEOUT"),
)
@click.option("--host", default="127.0.0.1", help="Address to listen on.", **_env("HOST"))
@click.option("--port", type=click.IntRange(0, 65535), default=8080, help="Port to listen on.", **_env("PORT"))
@click.option(
    "--interval",
    type=Duration(within=(1.0, MAX_INTERVAL_NS / 1e9, "between 1s and 168h")),
    default="5m",
    help="Length of a window in event time (300, 300s, 5m), from 1s (names have one-second resolution) "
    "to 168h (a week: every window then fits the accepted time range).",
    **_env("INTERVAL"),
)
@click.option(
    "--idle-close",
    type=Duration(),
    default="60s",
    help="Commit the open window after this long (wall clock) without new events.",
    **_env("IDLE_CLOSE"),
)
@click.option(
    "--align",
    type=click.Choice([a.value for a in Align]),
    default=Align.FIRST_EVENT.value,
    help="Window starts: at the first event (the reference), or on multiples of the interval.",
    **_env("ALIGN"),
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "never"]),
    default="always",
    help="'always': a 200 means the rows are on disk. 'never': faster, but a power loss can lose acknowledged rows.",
    **_env("FSYNC"),
)
@click.option(
    "--sync-many",
    type=click.Choice([m.value for m in SyncMany]),
    default=SyncMany.FILESYSTEM.value,
    help="How a request that writes to 8 or more files makes them durable: 'filesystem', one syncfs() of "
    "the output's filesystem (fastest; it also flushes other programs' pending writes there), or "
    "'per-file', one fdatasync each, side by side.",
    **_env("SYNC_MANY"),
)
@click.option(
    "--max-body",
    type=Size(),
    default="64MiB",
    help="Largest request body, after decompression (413 above).",
    **_env("MAX_BODY"),
)
@click.option("--max-line", type=Size(), default="8MiB", help="Longest NDJSON line (413 above).", **_env("MAX_LINE"))
@click.option(
    "--max-windows-per-request",
    type=click.IntRange(1),
    default=1000,
    help="Most windows one request may open, counted from its own event times from its first event (413 "
    "naming the line that would open one more; nothing written): bounds the files and writer time one "
    "request can take.",
    **_env("MAX_WINDOWS_PER_REQUEST"),
)
@click.option(
    "--key-retention",
    type=Duration(),
    default="1h",
    help="How long an applied Idempotency-Key is recognised (across restarts): a resend within it is "
    "answered as a replay and written nothing.",
    **_env("KEY_RETENTION"),
)
@click.option(
    "--key-memory",
    type=Size(),
    default="256MiB",
    help="Memory for the Idempotency-Keys kept (about 180 bytes plus the key's length each); a request "
    "with a new key beyond it is answered 503 with Retry-After until older keys expire.",
    **_env("KEY_MEMORY"),
)
@click.option(
    "--group-readable/--no-group-readable",
    default=False,
    help="Create files readable by the owner's group too (0640; default: the owner only, 0600).",
    **_env("GROUP_READABLE"),
)
@click.option(
    "--body-timeout",
    type=Duration(),
    default="30s",
    help="Time allowed to receive a request body, from the end of its headers (408 after).",
    **_env("BODY_TIMEOUT"),
)
@click.option(
    "--min-body-rate",
    type=Size(),
    default="240",
    help="Bytes per second a request body must average once it has had 5 seconds (408 and closed below; "
    "ASP.NET Kestrel's MinRequestBodyDataRate); 0: no minimum.",
    **_env("MIN_BODY_RATE"),
)
@click.option(
    "--max-header-size",
    type=Size(),
    default="64KiB",
    help="Largest request line and headers together (431 above; a URL over 8KiB alone: 414).",
    **_env("MAX_HEADER_SIZE"),
)
@click.option(
    "--header-timeout",
    type=Duration(),
    default="10s",
    help="Time allowed from a connection's opening, or a request's first byte, to the end of its headers "
    "(408 and closed after).",
    **_env("HEADER_TIMEOUT"),
)
@click.option(
    "--send-timeout",
    type=Duration(),
    default="30s",
    help="Time a client may leave its answers unread while more wait to be sent (the connection is "
    "closed after; nginx's send_timeout).",
    **_env("SEND_TIMEOUT"),
)
@click.option(
    "--keep-alive",
    type=Duration(),
    default="5s",
    help="How long an idle keep-alive connection stays open.",
    **_env("KEEP_ALIVE"),
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=1024,
    help="Open connections at most; one more is answered 503 and closed.",
    **_env("MAX_CONNECTIONS"),
)
@click.option(
    "--max-pending",
    type=Size(),
    default="256MiB",
    help="Request body bytes received and not yet written, across all requests (counted as they arrive, not "
    "as announced): a request that would pass it is answered 503 with Retry-After (before its body is read "
    "when its Content-Length cannot fit). At least --max-body.",
    **_env("MAX_PENDING"),
)
@click.option(
    "--auth-token",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on ingest and metrics (off when unset). A token given on "
    "the command line is visible to other users in ps and /proc: prefer BEA_AUTH_TOKEN or --auth-token-file.",
    **_env("AUTH_TOKEN"),
)
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Read the bearer token from this file instead.",
    **_env("AUTH_TOKEN_FILE"),
)
@click.option(
    "--header/--no-header", default=False, help="Write a header row at the top of each file.", **_env("HEADER")
)
@click.option(
    "--compress",
    type=click.Choice([c.value for c in Compress]),
    default=Compress.NONE.value,
    help="Committed files as .csv.gz (in-progress files stay invisible to *.csv* globs).",
    **_env("COMPRESS"),
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", help="Log line format.", **_env("LOG_FORMAT")
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="Least severe level logged.",
    **_env("LOG_LEVEL"),
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    help="One log line per request (method, path, status, events, bytes, duration); off saves a few "
    "microseconds per request under many small requests.",
    **_env("ACCESS_LOG"),
)
def serve(auth_token_file: Path | None, output: str, state_dir: Path | None, **options: Any) -> None:
    """Run the HTTP service: POST /user/event takes NDJSON, windows land in the output directory (or bucket)."""
    if options["multipart_chunksize"] < 5 * 1024 * 1024:
        raise click.BadParameter("must be at least 5MiB (S3's smallest part)", param_hint="'--multipart-chunksize'")
    options["output"], options["bucket"] = _directory_and_bucket(output, state_dir)
    if auth_token_file is not None:
        options["auth_token"] = auth_token_file.read_text().strip()
    options["fsync"] = options["fsync"] == "always"
    options["align"], options["sync_many"] = Align(options["align"]), SyncMany(options["sync_many"])
    options["compress"] = Compress(options["compress"])
    if options["max_pending"] < options["max_body"]:
        raise click.BadParameter(
            "must be at least --max-body (a request of --max-body bytes could never pass)", param_hint="'--max-pending'"
        )
    if options["max_header_size"] < 1024:
        raise click.BadParameter("must be at least 1KiB", param_hint="'--max-header-size'")
    settings = Settings(**options)
    configure_logging(settings.log_format, settings.log_level, access_log=settings.access_log)
    # The port first: when it is taken, nothing is created. Then the directory.
    listener = _listen(settings.host, settings.port)
    if settings.output.exists() and not settings.output.is_dir():
        listener.close()
        raise click.ClickException(f"cannot write to {settings.output}: it is not a directory")
    try:
        settings.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        listener.close()
        raise click.ClickException(f"cannot create the output directory {settings.output}: {exc.strerror}") from None

    if settings.bucket is None:
        mixed = _header_mismatch(settings.output, settings.header)
        if mixed is not None:
            listener.close()
            raise click.ClickException(mixed)

    from batched_event_api.http import uvicorn_server
    from batched_event_api.http.exchange import IngestRoute
    from batched_event_api.service import Ingest

    _raise_open_files_limit()

    ingest = Ingest(settings)
    try:  # take and recover the directory now, so that a problem is one clear line, not a traceback
        ingest.open()
    except ValueError as exc:  # the bucket's configuration, as the upload process found it
        listener.close()
        raise click.ClickException(f"cannot use {settings.bucket}: {exc}") from None
    except OSError as exc:
        listener.close()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # one sentence, not `[Errno 30] … '.lock'`
            raise click.ClickException(
                f"cannot serve from {settings.output}: the directory is not writable ({exc.strerror.lower()})"
            ) from None
        raise click.ClickException(f"cannot serve from {settings.output}: {exc}") from None
    except RuntimeError as exc:
        listener.close()
        raise click.ClickException(f"cannot serve from {settings.output}: {exc}") from None
    route = IngestRoute(ingest)
    if not uvicorn_server.run(settings, route, listener):
        sys.exit(3)


def _header_mismatch(directory: Path, header: bool) -> str | None:
    """Why serving `directory` with (or without) --header would mix files with and without a
    header row, judged by its newest committed file (readers of *.csv then fail, or read a header
    as data); None when it would not."""
    import gzip

    from batched_event_api.events.render import COLUMNS

    files = [p for pattern in ("user-events-*.csv", "user-events-*.csv.gz") for p in directory.glob(pattern)]
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    with (gzip.open if newest.name.endswith(".gz") else open)(newest, "rb") as f:
        has_header = f.readline() == (",".join(COLUMNS) + "\n").encode()
    if has_header == header:
        return None
    it, option = ("has no header row", "without --header") if header else ("starts with a header row", "with --header")
    return (
        f"cannot serve from {directory} {'with' if header else 'without'} --header: its newest file, {newest.name}, "
        f"{it}, and one directory of both kinds trips readers of *.csv; serve it {option}, or use another directory"
    )


def _directory_and_bucket(output: str, state_dir: Path | None) -> tuple[Path, BucketUrl | None]:
    """The directory a server writes (the output, or the state directory of a bucket output) and
    the bucket, from -o and --state-dir."""
    if output.startswith("s3://"):
        try:
            return state_dir or Path("./state"), BucketUrl.parse(output)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--output'") from None
    if state_dir is not None and state_dir.resolve() != Path(output).resolve():
        raise click.BadParameter(
            "applies to an s3:// output: a local output directory keeps its journal beside its files",
            param_hint="'--state-dir'",
        )
    return Path(output), None


def _listen(host: str, port: int) -> socket.socket:
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


@main.command()
@click.option(
    "--url",
    "urls",
    multiple=True,
    default=["http://127.0.0.1:8080"],
    help="The service (its /user/event is used). Repeat for several instances: chunks go round-robin, and "
    "a chunk whose server refuses the connection moves to the next one (BEA_URL: space-separated).",
    **_env("URL"),
)
@click.option(
    "--batch-lines", type=click.IntRange(1), default=10_000, help="Most lines per request.", **_env("BATCH_LINES")
)
@click.option(
    "--batch-bytes",
    type=Size(),
    default="8MiB",
    help="Most bytes per request (a longer line goes alone).",
    **_env("BATCH_BYTES"),
)
@click.option("--gzip/--no-gzip", "use_gzip", default=False, help="Compress request bodies.", **_env("SEND_GZIP"))
@click.option(
    "--auth-token",
    default=None,
    help="Bearer token, when the service requires one. On the command line it is visible to other users in "
    "ps and /proc (it is never printed, not even in the resume command): prefer BEA_AUTH_TOKEN or "
    "--auth-token-file.",
    **_env("AUTH_TOKEN"),
)
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Read the bearer token from this file instead.",
    **_env("AUTH_TOKEN_FILE"),
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=8,
    help="Retries of a chunk on connection errors, 408, 429 and 5xx (backoff 0.2s doubling to 10s).",
    **_env("RETRIES"),
)
@click.option("--timeout", type=Duration(), default="60s", help="Time allowed for one request.", **_env("TIMEOUT"))
@click.option(
    "--key-prefix",
    default=None,
    help="Idempotency-Key prefix (default: random per run). Reuse one to resend the same files safely.",
    **_env("KEY_PREFIX"),
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
def send(
    files: tuple[str, ...],
    urls: tuple[str, ...],
    batch_lines: int,
    batch_bytes: int,
    use_gzip: bool,
    auth_token: str | None,
    auth_token_file: Path | None,
    retries: int,
    timeout: float,
    key_prefix: str | None,
    progress: bool | None,
) -> None:
    """Post NDJSON FILES (- for stdin) in ordered chunks, each retried with its own Idempotency-Key."""
    from batched_event_api.cli.sender import Sender, SendError, total_bytes

    if auth_token_file is not None:
        auth_token = auth_token_file.read_text().strip()

    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise click.BadParameter(
                f"{url!r} is not an http:// or https:// URL (like http://127.0.0.1:8080)", param_hint="'--url'"
            )
    for path in files:
        if path != "-" and not Path(path).is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="FILES")
    tty = sys.stderr.isatty() if progress is None else progress
    options: dict[str, Any] = {"key_prefix": key_prefix} if key_prefix else {}
    sender = Sender(
        list(urls),
        batch_lines=batch_lines,
        batch_bytes=batch_bytes,
        gzip=use_gzip,
        auth_token=auth_token,
        retries=retries,
        timeout=timeout,
        **options,
    )
    # With this prefix, a resend of the same files skips every chunk the server already applied.
    click.echo(f"idempotency key prefix: {sender.key_prefix}", err=True)
    with _Progress(total_bytes(list(files)), tty) as bar, _interrupts_raised() as interrupted:
        sender.progress = bar
        try:
            summary = sender.send_files(list(files))
        except (SendError, KeyboardInterrupt) as exc:
            bar.stop()
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: the chunk in flight may or may not be applied
                click.echo(f"interrupted by {interrupted[0].name}", err=True)
            else:
                click.echo(f"error: {exc}", err=True)
            if isinstance(exc, KeyboardInterrupt) or sender.reached:
                _echo_resume(sender.key_prefix)
            sys.exit(128 + interrupted[0] if isinstance(exc, KeyboardInterrupt) else 1)
        finally:
            sender.close()
    rate = summary.events / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"sent {_count(summary.events, 'event')} ({summary.bytes / 1e6:.1f} MB) in {_count(summary.requests, 'request')} "
        f"from {_count(summary.files, 'file')} in {summary.seconds:.1f}s, {rate:,.0f} events/s; "
        f"{_count(summary.replayed_events, 'event')} in {_count(summary.replays, 'request')} "
        f"{'was' if summary.replayed_events == 1 else 'were'} already applied (replays); "
        f"{_count(summary.retries, 'retry', 'retries')}"
    )


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


@contextlib.contextmanager
def _interrupts_raised() -> Iterator[list[signal.Signals]]:
    """SIGTERM raises KeyboardInterrupt as SIGINT does, so both end a send the same way; the list
    holds the signal that came (SIGINT when none did, as for a KeyboardInterrupt raised otherwise)."""
    came = [signal.SIGINT]

    def handler(signum: int, frame: object) -> None:
        came[0] = signal.Signals(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield came
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _echo_resume(prefix: str) -> None:
    command, token_left_out = _resume_command(prefix)
    click.echo(f"to resume without duplicates, run again with the same key prefix:\n  {command}", err=True)
    if token_left_out:
        click.echo("  (the bearer token is left out: give it as BEA_AUTH_TOKEN or with --auth-token-file)", err=True)


def _resume_command(prefix: str) -> tuple[str, bool]:
    """This very command line, with --key-prefix PREFIX (replacing any given), and without a
    bearer token given with --auth-token (never printed: a terminal's scrollback, CI logs); and
    whether one was left out."""
    args, skip, token_left_out = [], False, False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--key-prefix", "--auth-token"):
            skip = True
            token_left_out |= arg == "--auth-token"
        elif arg.startswith("--auth-token="):
            token_left_out = True
        elif not arg.startswith("--key-prefix="):
            args.append(arg)
    # The program as typed (`.venv/bin/batched-event-api` works without an active venv); under
    # `python -m` argv[0] is a path to __main__.py, and the installed command is named instead.
    program = sys.argv[0] if Path(sys.argv[0]).name == "batched-event-api" else "batched-event-api"
    return shlex.join([program, *args[:1], "--key-prefix", prefix, *args[1:]]), token_left_out


@main.command()
@click.option(
    "-o",
    "--output",
    default="./data",
    help="The output directory to describe; for an s3:// output, its --state-dir is described.",
    **_env("OUTPUT"),
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The state directory of a bucket output [default: ./state].",
    **_env("STATE_DIR"),
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(output: str, state_dir: Path | None, as_json: bool) -> None:
    """What an output directory holds: the open window, committed files, pending publishes, the journal.
    Reads the directory only; a server need not run."""
    from batched_event_api.commit.inventory import read_status
    from batched_event_api.commit.journal import JournalDamaged

    directory, bucket = _directory_and_bucket(output, state_dir)
    try:
        state = read_status(directory)
    except (FileNotFoundError, JournalDamaged) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(state.as_dict()))
        return
    w = state.open
    click.echo(f"{state.directory}: {'served by a running server' if state.served else 'no server running'}")
    click.echo(
        f"open window:       {w.name} (event time from {w.start}), {w.rows:,} rows, {w.bytes:,} bytes, "
        f"last written {w.idle_seconds:g}s ago"
        if w
        else "open window:       none"
    )
    click.echo(
        f"{'waiting for upload:' if bucket else 'committed files:  '} {state.committed_files:,} "
        f"({state.committed_bytes:,} bytes)" + (f", newest {state.newest_committed}" if state.newest_committed else "")
    )
    if state.uploaded_kept:
        click.echo(f"uploaded, kept until the journal moves on: {state.uploaded_kept:,}")
    click.echo(f"pending publishes: {', '.join(state.pending_publish) or 'none'}")
    click.echo(f"journal:           {state.journal_bytes:,} bytes, {state.journal_records:,} records")


class _Progress:
    """A rich progress bar on a terminal; otherwise a plain line at most every two seconds."""

    def __init__(self, total: int | None, tty: bool) -> None:
        self.tty = tty
        self.events = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last_line = self.started  # the first plain line after two seconds: a short run prints none
        self._bar: Any = None
        if tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            # On stderr, as the plain lines and the messages (stdout keeps the summary for scripts);
            # the bar takes what the figures leave of the terminal's width, so the line fits 80
            # columns instead of wrapping.
            self._bar = Progress(
                TextColumn("[bold]{task.fields[events]:>9,} events"),
                BarColumn(bar_width=None),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[rate]:>7,.0f} events/s"),
                TimeRemainingColumn(),
                transient=False,
                expand=True,
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("send", total=total, events=0, rate=0.0)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, events: int, size: int) -> None:
        self.events += events
        self.bytes += size
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=size, events=self.events, rate=self.events / elapsed)
        elif time.monotonic() - self._last_line >= 2.0:
            self._last_line = time.monotonic()
            click.echo(
                f"progress: {self.events:,} events, {self.bytes / 1e6:.1f} MB, {self.events / elapsed:,.0f} events/s",
                err=True,
            )

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"[yellow]{message}")
        else:
            click.echo(message, err=True)


def _raise_open_files_limit() -> None:
    """Soft limit on open files up to the hard one (as Go's runtime does): connections and part
    files share it, and 1024, a common soft default, is too few for --max-connections 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
