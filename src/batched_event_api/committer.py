"""Group commit: requests that arrive while a round is being written wait, then go together.

One round at a time runs on the writer thread (one journal record, one sync round for all its
requests); meanwhile the event loop keeps receiving and preparing requests. When the round ends,
every request that arrived since becomes the next round. Each caller gets its own outcome (a
replay, its rows written), or the round's storage error: nobody is answered before the round
that holds their rows is durable. Used from the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .serial import SerialThread

log = logging.getLogger("batched_event_api")

R = TypeVar("R")  # a request
A = TypeVar("A")  # its outcome


class Committer(Generic[R, A]):
    def __init__(
        self,
        apply_group: Callable[[Sequence[R]], list[A]],
        thread: SerialThread,
        *,
        max_group: int = 4096,
        # told each round's size and its outcomes (None when the round failed)
        on_round: Callable[[int, list[A] | None], object] = lambda size, outcomes: None,
    ) -> None:
        self._apply_group = apply_group
        self._thread = thread
        self._max_group = max_group
        self._on_round = on_round
        self._waiting: list[tuple[R, asyncio.Future[A]]] = []
        self._running = False

    async def commit(self, request: R) -> A:
        future: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if not self._running:
            self._start_round()
        return await future

    def _start_round(self) -> None:
        group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
        self._running = True
        done = self._thread.call(self._apply_group, [request for request, _ in group])
        done.add_done_callback(lambda outcome: self._finish(group, outcome))

    def _finish(self, group: list[tuple[R, asyncio.Future[A]]], outcome: asyncio.Future[list[A]]) -> None:
        self._running = False
        error = outcome.exception()
        results = outcome.result() if error is None else [None] * len(group)
        try:
            self._on_round(len(group), None if error is not None else results)
        except Exception:  # a metrics hook must not leave the round's callers waiting
            log.exception("after a commit round")
        for (_, future), result in zip(group, results):
            if future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]
        if self._waiting:
            self._start_round()
