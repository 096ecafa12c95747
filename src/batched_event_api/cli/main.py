"""Command line: `serve` runs the service, `send` feeds it files, `status` describes an output
directory. Every option has an environment variable."""

from __future__ import annotations

import click

from batched_event_api import __version__
from batched_event_api.cli import completion
from batched_event_api.cli.send import send
from batched_event_api.cli.serve import serve
from batched_event_api.cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="batched-event-api")
def main() -> None:
    """Receive user events as NDJSON over HTTP and write them as CSV files, one per window of event time."""


main.add_command(serve)
main.add_command(send)
main.add_command(status)
completion.register()
