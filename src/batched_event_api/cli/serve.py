"""`serve`: the options into Settings, the checks that make a bad start one line, then the server."""

from __future__ import annotations

import contextlib
import errno
import sys
from pathlib import Path
from typing import Any

import click

from batched_event_api.cli.options import Duration, Named, Size, directory_and_store, setting
from batched_event_api.cli.startup import header_mismatch, listen, make_directory, unfinished_direct_run
from batched_event_api.config import COMPRESSIONS, OUTPUT, STATE_DIR, Align, Compress, Format, MiB, Settings, SyncMany
from batched_event_api.events.timestamps import MAX_INTERVAL_NS
from batched_event_api.logs import configure_logging
from batched_event_api.output.partition import Partition


@click.command()
@setting(
    "-o",
    "--output",
    default=OUTPUT,
    help="Directory for the CSV files (created if missing), or s3://BUCKET/PREFIX/ for a bucket (configured "
    "by the AWS_* variables; see the README).",
)
@setting(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With a bucket as output, or a local one with --format parquet or --partition: the directory for the "
    f"journal, the open window and committed windows on their way [default: {STATE_DIR}]; not the output "
    "directory. A plain local output keeps these beside its files.",
)
@setting(
    "--max-backlog",
    type=Size(),
    help="With a state directory: bytes of committed windows waiting for the bucket (or the output directory); "
    "beyond it requests are answered 503 with Retry-After.",
)
@setting(
    "--multipart-threshold",
    type=Size(),
    help="With a bucket as output: windows this large or larger go up as multipart uploads streamed from "
    "their file (the AWS CLI's multipart_threshold).",
)
@setting(
    "--multipart-chunksize",
    type=Size(),
    help="With a bucket as output: the size of each part of a multipart upload, at least 5MiB (the AWS "
    "CLI's multipart_chunksize).",
)
@setting(
    "--upload-concurrency",
    type=click.IntRange(1, 64),
    help="With a bucket as output: windows uploaded side by side (the AWS CLI's max_concurrent_requests).",
)
@setting(
    "--upload-nice",
    type=click.IntRange(0, 19),
    help="With a bucket as output: how much lower the upload process's CPU priority is than the "
    "server's (nice), so that uploads take the CPU ingest leaves; 0: the same priority.",
)
@setting(
    "--drain-timeout",
    type=Duration(),
    help="With a state directory: how long a shutdown waits for the windows on their way to the bucket or the "
    "output directory (the rest go at the next start).",
)
@setting("--host", help="Address to listen on.")
@setting("--port", type=click.IntRange(0, 65535), help="Port to listen on.")
@setting(
    "--interval",
    type=Duration(within=(1.0, MAX_INTERVAL_NS / 1e9, "between 1s and 168h")),
    help="Length of a window in event time (300, 300s, 5m), from 1s (names have one-second resolution) "
    "to 168h (a week: every window then fits the accepted time range).",
)
@setting(
    "--idle-close",
    type=Duration(),
    help="Commit the open window (with --align interval: every open window) after this long (wall clock) "
    "without new events.",
)
@setting(
    "--align",
    type=Named({a.value: a for a in Align}),
    help="Windows: 'first-event' (the reference: a window starts at its first event and takes every event "
    "until one at or past its start + interval, late ones included), or 'interval' (strict: window k holds "
    "exactly the events in [k*interval, (k+1)*interval), several open at once; a file's name bounds its rows).",
)
@setting(
    "--max-open-windows",
    type=click.IntRange(1, 1024),
    help="With --align interval: windows open at once; an event for one more commits the oldest (earliest "
    "start) first.",
)
@setting(
    "--allowed-lateness",
    type=Duration(zero=True),
    help="With --align interval: a window is committed once an event at or past its end + this much has been "
    "accepted (or by --idle-close, the open-window cap, shutdown). An event for a window committed already "
    "re-opens it in a new file (-1, ...), committed only by idle time, the cap or shutdown.",
)
@setting(
    "--max-file-bytes",
    type=Size(),
    help="A window's file that reaches this size is committed and the window goes on in a new file (-1, -2, "
    "...), split between rows: a file stays within it unless one row (with the header) is larger, which "
    "then has a file of its own. With --compress the compressed file is measured after each write, so it "
    "may pass the limit by one request's rows. [default: unlimited]",
)
@setting(
    "--fsync",
    type=Named({"always": True, "never": False}),
    help="'always': a 200 means the rows are on disk. 'never': faster, but a power loss can lose acknowledged rows.",
)
@setting(
    "--sync-many",
    type=Named({m.value: m for m in SyncMany}),
    help="How a request that writes to 8 or more files makes them durable: 'filesystem', one syncfs() of "
    "the output's filesystem (fastest; it also flushes other programs' pending writes there), or "
    "'per-file', one fdatasync each.",
)
@setting("--max-body", type=Size(), help="Largest request body, after decompression (413 above).")
@setting("--max-line", type=Size(), help="Longest NDJSON line (413 above).")
@setting(
    "--max-windows-per-request",
    type=click.IntRange(1),
    help="Most windows one request may open, counted from its own event times from its first event (with "
    "--align interval: the distinct windows its events fall in) (413 naming the line that would open one "
    "more; nothing written): bounds the files and writer time one request can take.",
)
@setting(
    "--key-retention",
    type=Duration(),
    help="How long an applied Idempotency-Key is recognised (across restarts): a resend within it is "
    "answered as a replay and written nothing.",
)
@setting(
    "--key-memory",
    type=Size(),
    help="Memory for the Idempotency-Keys kept (about 180 bytes plus the key's length each); a request "
    "with a new key beyond it is answered 503 with Retry-After until older keys expire.",
)
@setting(
    "--group-readable/--no-group-readable",
    help="Create files readable by the owner's group too (0640; default: the owner only, 0600).",
)
@setting(
    "--body-timeout",
    type=Duration(),
    help="Time allowed to receive a request body, from the end of its headers (408 after).",
)
@setting(
    "--min-body-rate",
    type=Size(),
    help="Bytes per second a request body must average once it has had 5 seconds (408 and closed below; "
    "ASP.NET Kestrel's MinRequestBodyDataRate); 0: no minimum.",
)
@setting(
    "--max-header-size",
    type=Size(),
    help="Largest request line and headers together (431 above; a URL over 8KiB alone: 414).",
)
@setting(
    "--header-timeout",
    type=Duration(),
    help="Time allowed from a connection's opening, or a request's first byte, to the end of its headers "
    "(408 and closed after).",
)
@setting(
    "--send-timeout",
    type=Duration(),
    help="Time a client may leave its answers unread while more wait to be sent (the connection is "
    "closed after; nginx's send_timeout).",
)
@setting("--keep-alive", type=Duration(), help="How long an idle keep-alive connection stays open.")
@setting(
    "--max-connections",
    type=click.IntRange(1),
    help="Open connections at most; one more is answered 503 and closed.",
)
@setting(
    "--max-pending",
    type=Size(),
    help="Request body bytes received and not yet written, across all requests (counted as they arrive, not "
    "as announced): a request that would pass it is answered 503 with Retry-After (before its body is read "
    "when its Content-Length cannot fit). At least --max-body.",
)
@setting(
    "--auth-token",
    help="Require 'Authorization: Bearer TOKEN' on ingest and metrics (off when unset). A token given on "
    "the command line is visible to other users in ps and /proc: prefer BEA_AUTH_TOKEN or --auth-token-file.",
)
@setting(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Read the bearer token from this file instead.",
)
@setting("--header/--no-header", help="Write a header row at the top of each file.")
@setting(
    "--format",
    type=Named({f.value: f for f in Format}),
    help="What each committed window becomes: 'csv', the reference's files, or 'parquet', one Parquet file "
    "of typed columns (see the README's 'For warehouses'), converted off the request path: the writer then "
    "works in --state-dir.",
)
@setting(
    "--partition",
    metavar="TEMPLATE",
    help="A strftime template of each window's start in UTC giving its file's sub-directory, or key prefix "
    "under the bucket's: 'dt=%Y-%m-%d/hour=%H' puts data/dt=2024-07-01/hour=02/user-events-20240701-020000.csv "
    "[default: none, every file in the output itself]. A local output then works through --state-dir.",
)
@setting(
    "--compress",
    type=Named({c.value: c for c in Compress}),
    help="CSV: none [default], gzip (.csv.gz) or zstd (.csv.zst); in-progress files stay invisible to *.csv* "
    "globs. Parquet: zstd [default], snappy, gzip or none, inside the file.",
)
@setting("--log-format", type=click.Choice(["text", "json"]), help="Log line format.")
@setting(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe level logged.",
)
@setting(
    "--access-log/--no-access-log",
    help="One log line per request (method, path, status, events, bytes, duration); off saves a few "
    "microseconds per request under many small requests.",
)
def serve(auth_token_file: Path | None, output: str, state_dir: Path | None, **options: Any) -> None:
    """Run the HTTP service: POST /user/event takes NDJSON, windows land in the output directory (or bucket)."""
    if options["multipart_chunksize"] < 5 * MiB:
        raise click.BadParameter("must be at least 5MiB (S3's smallest part)", param_hint="'--multipart-chunksize'")
    _check_format(
        options["format"],
        options["compress"],
        options["partition"],
        options["align"],
        round(options["interval"] * 1_000_000_000),
    )
    finishing = options["format"] is Format.PARQUET or options["partition"] is not None
    options["output"], options["bucket"], options["output_directory"] = directory_and_store(
        output, state_dir, finishing=finishing
    )
    if auth_token_file is not None:
        options["auth_token"] = auth_token_file.read_text().strip()
    if options["max_pending"] < options["max_body"]:
        raise click.BadParameter(
            "must be at least --max-body (a request of --max-body bytes could never pass)", param_hint="'--max-pending'"
        )
    if options["max_file_bytes"] is not None and options["max_file_bytes"] < 1:
        raise click.BadParameter("must be at least 1 byte", param_hint="'--max-file-bytes'")
    if options["max_header_size"] < 1024:
        raise click.BadParameter("must be at least 1KiB", param_hint="'--max-header-size'")
    settings = Settings(**options)
    configure_logging(settings.log_format, settings.log_level, access_log=settings.access_log)
    # The port first: when it is taken, nothing is created. Then the directory.
    listener = listen(settings.host, settings.port)
    try:
        make_directory(settings.output)
        if settings.output_directory is not None:
            make_directory(settings.output_directory)
            if (unfinished := unfinished_direct_run(settings.output_directory)) is not None:
                raise click.ClickException(unfinished)
        if settings.store_url is None and (mixed := header_mismatch(settings.output, settings.header)) is not None:
            raise click.ClickException(mixed)
    except click.ClickException:
        listener.close()
        raise

    from batched_event_api.http.exchange import IngestRoute
    from batched_event_api.http.uvicorn_server import server
    from batched_event_api.service import Ingest

    _raise_open_files_limit()

    ingest = Ingest(settings)
    try:  # take and recover the directory now, so that a problem is one clear line, not a traceback
        ingest.open()
    except ValueError as exc:  # the store's configuration, as the finish process found it
        listener.close()
        raise click.ClickException(f"cannot use {settings.store_url}: {exc}") from None
    except OSError as exc:
        listener.close()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # one sentence, not `[Errno 30] … '.lock'`
            raise click.ClickException(
                f"cannot serve from {settings.output}: the directory is not writable ({(exc.strerror or '').lower()})"
            ) from None
        raise click.ClickException(f"cannot serve from {settings.output}: {exc}") from None
    except RuntimeError as exc:
        listener.close()
        raise click.ClickException(f"cannot serve from {settings.output}: {exc}") from None
    route = IngestRoute(ingest)
    if not server.run(settings, route, listener):
        sys.exit(3)


def _check_format(
    format: Format, compress: Compress | None, partition: str | None, align: Align, interval_ns: int
) -> None:
    """--compress fits --format; --partition is a template that keeps every file in the output,
    and under strict windows changes only where a window ends."""
    if compress is not None and compress not in COMPRESSIONS[format]:
        raise click.BadParameter(
            f"{compress} does not apply to --format {format}, which takes "
            + ", ".join(c.value for c in COMPRESSIONS[format]),
            param_hint="'--compress'",
        )
    if partition is None:
        return
    try:
        period = Partition(partition).period_ns()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--partition'") from None
    if align is Align.INTERVAL and period is not None and period % interval_ns:
        # A window that crosses a partition's change would be filed under its start's partition
        # and hold rows of the next one: strict windows promise a file's partition bounds its rows.
        raise click.BadParameter(
            f"{partition!r} changes every {Duration.text(period / 1e9)}: with --align interval, --interval must divide that "
            f"(not {Duration.text(interval_ns / 1e9)}), so that a window's partition bounds every row in it",
            param_hint="'--partition'",
        )


def _raise_open_files_limit() -> None:
    """Soft limit on open files up to the hard one (as Go's runtime does): connections and part
    files share it, and 1024, a common soft default, is too few for --max-connections 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
