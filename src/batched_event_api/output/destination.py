"""Where finished windows go next, once the writer has published them in its directory: nowhere
(the directory is the output: plain CSV, no partition) or on into a store, a bucket or a local
output directory (from the state directory, by the finish process: converted into Parquet, put
under their partition). The service holds one Destination and never asks which."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batched_event_api.commit.disk import FILE_MODE, GROUP_FILE_MODE
from batched_event_api.config import Settings
from batched_event_api.errors import RETRY_AFTER, ClientError
from batched_event_api.metrics import Metrics
from batched_event_api.output.messages import ChildArgs
from batched_event_api.output.process import UploadProcess

log = logging.getLogger("batched_event_api")


@dataclass(frozen=True, slots=True)
class Backlog:
    """Committed windows that have not reached their destination yet."""

    windows: int
    bytes: int


class Destination(Protocol):
    directory_role: str  # what the writer's directory is to it: "output" or "state"
    # The writer settles after its idle and final commits (nothing stays pinned), so that windows
    # passed on can be removed from its directory.
    settles: bool

    def start(self) -> None:
        """Before serving (ValueError: its configuration is wrong; RuntimeError: it cannot start)."""
        ...

    def committed(self, windows: int) -> None:
        """A commit round ended with `windows` windows published (0: none, but the journal moved)."""
        ...

    def drain(self, timeout: float) -> None:
        """At shutdown: wait up to `timeout` seconds for what waits to get there (said if it did
        not: it goes at the next start). Blocks."""
        ...

    def stop(self) -> None: ...

    def backlog(self) -> Backlog | None:
        """What waits, or None when nothing ever waits."""
        ...

    def refusal(self) -> ClientError | None:
        """Why a new request is refused (the backlog is full), or None."""
        ...


class LocalOutput:
    """The writer's directory is the output: a published window is where it goes."""

    directory_role = "output"
    settles = False

    def start(self) -> None:
        pass

    def committed(self, windows: int) -> None:
        pass

    def drain(self, timeout: float) -> None:
        pass

    def stop(self) -> None:
        pass

    def backlog(self) -> Backlog | None:
        return None

    def refusal(self) -> ClientError | None:
        return None


class StoreOutput:
    """Windows published in the state directory go on into a store (a bucket, a local output
    directory), by a process of their own; --max-backlog bounds the bytes waiting."""

    directory_role = "state"
    settles = True

    def __init__(
        self, uploads: UploadProcess, metrics: Metrics, *, directory: Path, store_url: str, max_backlog: int
    ) -> None:
        self.uploads = uploads
        self.directory = directory
        self.store_url = store_url  # for what is said
        self.max_backlog = max_backlog
        metrics.backlog_windows.set_function(lambda: uploads.backlog_windows)
        metrics.backlog_bytes.set_function(lambda: uploads.backlog_bytes)

    def start(self) -> None:
        self.uploads.start()

    def committed(self, windows: int) -> None:
        if windows or self.uploads.awaiting_release:
            self.uploads.wake()  # new windows to upload, or uploaded ones the journal may have let go

    def drain(self, timeout: float) -> None:
        if not self.uploads.drain(timeout):
            log.warning(
                "%d committed windows (%d bytes) not uploaded within --drain-timeout %gs: they stay in %s "
                "and are uploaded at the next start",
                self.uploads.backlog_windows,
                self.uploads.backlog_bytes,
                timeout,
                self.directory,
            )

    def stop(self) -> None:
        self.uploads.stop()

    def backlog(self) -> Backlog | None:
        return Backlog(self.uploads.backlog_windows, self.uploads.backlog_bytes)

    def refusal(self) -> ClientError | None:
        if self.uploads.backlog_bytes < self.max_backlog:
            return None
        return ClientError(
            f"{self.uploads.backlog_windows} committed windows wait for {self.store_url} (--max-backlog reached); "
            "retry shortly",
            status=503,
            headers={"retry-after": RETRY_AFTER},
        )


def destination(settings: Settings, metrics: Metrics, pinned: Callable[[], frozenset[str]]) -> Destination:
    """The destination the settings name; `pinned`: the windows the journal's last record names."""
    if settings.store_url is None:
        return LocalOutput()
    args = ChildArgs(
        directory=str(settings.output),
        store=settings.store_url,
        concurrency=settings.upload_concurrency,
        nice=settings.upload_nice,
        multipart_from=settings.multipart_threshold,
        part_size=settings.multipart_chunksize,
        log_format=settings.log_format,
        log_level=settings.log_level,
        parent=0,  # set by UploadProcess
        format=settings.format.value,
        compression=settings.compression.value,
        header=settings.header,
        partition=settings.partition,
        file_mode=GROUP_FILE_MODE if settings.group_readable else FILE_MODE,
        max_body=settings.max_body,
    )
    uploads = UploadProcess(args, metrics, pinned=pinned)
    return StoreOutput(
        uploads, metrics, directory=settings.output, store_url=settings.store_url, max_backlog=settings.max_backlog
    )
