"""`send`'s progress: a rich bar on a terminal, else a plain line now and then; both on stderr."""

from __future__ import annotations

import time
from typing import Any

import click


class Progress:
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

    def __enter__(self) -> Progress:
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
