"""`status`: what an output (or state) directory holds, read from its files; a server need not run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batched_event_api.cli.options import Named, directory_and_store, setting
from batched_event_api.config import OUTPUT, STATE_DIR, Format


@click.command()
@setting(
    "-o",
    "--output",
    default=OUTPUT,
    help="The output directory to describe; for an s3:// output, its --state-dir is described.",
)
@setting(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"The state directory of a bucket output, or of a local one with --format parquet or --partition "
    f"[default: {STATE_DIR}].",
)
@setting(
    "--format",
    type=Named({f.value: f for f in Format}),
    help="As given to serve: with 'parquet', a local output's --state-dir is described.",
)
@setting(
    "--partition", metavar="TEMPLATE", help="As given to serve: when set, a local output's --state-dir is described."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(output: str, state_dir: Path | None, format: Format, partition: str | None, as_json: bool) -> None:
    """What an output directory holds: the open windows, committed files, pending publishes, the journal.
    Reads the directory only; a server need not run."""
    from batched_event_api.commit.inventory import read_status
    from batched_event_api.commit.journal import JournalDamaged

    finishing = format is Format.PARQUET or partition is not None
    directory, bucket, output_directory = directory_and_store(output, state_dir, finishing=finishing)
    try:
        state = read_status(directory)
    except (OSError, JournalDamaged) as exc:  # a missing directory; a journal that is not a regular file
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(state.as_dict()))
        return
    click.echo(f"{state.directory}: {'served by a running server' if state.served else 'no server running'}")
    if len(state.open_windows) > 1:
        click.echo(f"open windows:      {len(state.open_windows)}")
    for w in state.open_windows:
        click.echo(
            f"open window:       {w.name} (event time from {w.start}{', a late file' if w.late else ''}), "
            f"{w.rows:,} rows, {w.bytes:,} bytes, last written {w.idle_seconds:g}s ago"
        )
    if not state.open_windows:
        click.echo("open window:       none")
    click.echo(
        f"{'waiting for upload:' if bucket else 'waiting for output:' if output_directory else 'committed files:  '} "
        f"{state.committed_files:,} "
        f"({state.committed_bytes:,} bytes)" + (f", newest {state.newest_committed}" if state.newest_committed else "")
    )
    if state.uploaded_kept:
        click.echo(f"uploaded, kept until the journal moves on: {state.uploaded_kept:,}")
    click.echo(f"pending publishes: {', '.join(state.pending_publish) or 'none'}")
    click.echo(f"journal:           {state.journal_bytes:,} bytes, {state.journal_records:,} records")
