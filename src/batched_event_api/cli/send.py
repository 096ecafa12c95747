"""`send`: post NDJSON files in ordered chunks, with a progress bar, and on failure or interrupt the
command that resumes the run without duplicates."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from batched_event_api.cli.options import Duration, Size, send_setting


@click.command()
@send_setting(
    "--url",
    "urls",
    multiple=True,
    envvar="URL",
    help="The service (its /user/event is used). Repeat for several instances: chunks go round-robin, and "
    "a chunk whose server refuses the connection moves to the next one (BEA_URL: space-separated).",
)
@send_setting("--batch-lines", type=click.IntRange(1), help="Most lines per request.")
@send_setting("--batch-bytes", type=Size(), help="Most bytes per request (a longer line goes alone).")
@send_setting("--gzip/--no-gzip", "gzip", envvar="SEND_GZIP", help="Compress request bodies.")
@send_setting(
    "--auth-token",
    default=None,
    help="Bearer token, when the service requires one. On the command line it is visible to other users in "
    "ps and /proc (it is never printed, not even in the resume command): prefer BEA_AUTH_TOKEN or "
    "--auth-token-file.",
)
@send_setting(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Read the bearer token from this file instead.",
)
@send_setting(
    "--retries",
    type=click.IntRange(0),
    help="Retries of a chunk on connection errors, 408, 429 and 5xx (backoff 0.2s doubling to 10s).",
)
@send_setting("--timeout", type=Duration(), help="Time allowed for one request.")
@send_setting(
    "--key-prefix",
    default=None,
    help="Idempotency-Key prefix (default: random per run). Reuse one to resend the same files safely.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
def send(
    files: tuple[str, ...],
    urls: tuple[str, ...],
    batch_lines: int,
    batch_bytes: int,
    gzip: bool,
    auth_token: str | None,
    auth_token_file: Path | None,
    retries: int,
    timeout: float,
    key_prefix: str | None,
    progress: bool | None,
) -> None:
    """Post NDJSON FILES (- for stdin) in ordered chunks, each retried with its own Idempotency-Key."""
    from batched_event_api.cli.client import Sender, SendError, total_bytes
    from batched_event_api.cli.progress import Progress

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
        gzip=gzip,
        auth_token=auth_token,
        retries=retries,
        timeout=timeout,
        **options,
    )
    # With this prefix, a resend of the same files skips every chunk the server already applied.
    click.echo(f"idempotency key prefix: {sender.key_prefix}", err=True)
    with Progress(total_bytes(list(files)), tty) as bar, _interrupts_raised() as interrupted:
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
