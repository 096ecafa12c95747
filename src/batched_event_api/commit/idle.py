"""When open windows close, in one place: by event time (the window policy, in every commit round:
an event at or past start + interval closes the open window; with strict windows the watermark,
the open-window cap or --max-file-bytes), after `--idle-close` of wall-clock time without new
events (this timer: every open window), and at shutdown (the app asks for it, and stops this
timer first).

A quiet source's last window must not wait for its next request: so the timer is also armed at
start when a window was recovered, and a failed idle commit is retried with backoff. Used from
the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from batched_event_api.backoff import Backoff
from batched_event_api.errors import StorageError

log = logging.getLogger("batched_event_api")

RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds between retries of a failed idle commit


class IdleClose:
    def __init__(self, idle: float, commit: Callable[[], Awaitable[None]]) -> None:
        """`commit` commits the open windows and publishes what is committed (StorageError when it cannot)."""
        self.idle = idle
        self._commit = commit
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None  # kept referenced until done
        self._backoff = Backoff(RETRY_FIRST, RETRY_MAX)

    def touch(self, delay: float | None = None) -> None:
        """Events were written (or a window was recovered): commit after `delay` (default: the
        idle time) from now. One timer at a time: this only moves the deadline, and the timer
        re-arms itself when it fires early."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + (self.idle if delay is None else delay)
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._fire)
            return
        self._timer = None
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._commit()
        except StorageError as exc:
            delay = self._backoff.failed()
            log.error("idle commit failed, retrying in %gs: %s", delay, exc)
            self.touch(delay)
            return
        self._backoff.succeeded()
