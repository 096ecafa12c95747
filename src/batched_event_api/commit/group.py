"""Group commit: requests that arrive while a round is being written wait, then go together.

One round at a time runs on the writer thread (one journal record, one sync round for all its
requests); meanwhile the event loop keeps receiving and preparing requests. When the round ends,
every request that arrived since becomes the next round. Each caller is told its own outcome (a
replay, its rows written), or the round's storage error: nobody is answered before the round
that holds their rows is durable. Callbacks rather than awaits: a one-event request's answer is
then one event-loop wake-up away from its round's end. Used from the event loop only.

A round `light` says may run on the event loop (with --fsync never: a few KB appended to a file
already open, nothing to sync, create or publish) runs there while the writer thread is idle:
two thread wake-ups per round are most of a one-event request's time on one connection. It
starts from the loop's queue, not from submit(), so requests parsed in the same turn join it and
pipelined requests answered inline do not recurse. One that takes longer than LIGHT_STALL (a
disk throttling writeback) sends rounds back to the thread for LIGHT_PAUSE.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from batched_event_api.commit.thread import SerialThread

log = logging.getLogger("batched_event_api")

LIGHT_STALL = 0.001  # seconds a round on the event loop may take before rounds leave it ...
LIGHT_PAUSE = 1.0  # ... for this long

R = TypeVar("R")  # a request
A = TypeVar("A")  # its outcome
Done = Callable[[A | None, BaseException | None], object]  # told (outcome, None) or (None, error)


class Committer(Generic[R, A]):
    def __init__(
        self,
        apply_group: Callable[[Sequence[R]], list[A]],
        thread: SerialThread,
        *,
        max_group: int = 4096,
        # told each round's size and its outcomes (None when the round failed)
        on_round: Callable[[int, list[A] | None], object] = lambda size, outcomes: None,
        # may this round run on the event loop (None: never)
        light: Callable[[Sequence[R]], bool] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._apply_group = apply_group
        self._thread = thread
        self._max_group = max_group
        self._on_round = on_round
        self._light = light
        self._clock = clock
        self._light_after = -math.inf  # no round on the loop before this (one took too long)
        self._waiting: list[tuple[R, Done]] = []
        self._running = False
        self._idle: list[asyncio.Future[None]] = []

    def submit(self, request: R, done: Done) -> None:
        """Write `request` in the next round; then done(outcome, None) or done(None, error)."""
        self._waiting.append((request, done))
        if not self._running:
            self._start_round()

    async def drained(self) -> None:
        """Return once every request submitted so far is answered."""
        if self._running:
            future = asyncio.get_running_loop().create_future()
            self._idle.append(future)
            await future

    def _start_round(self) -> None:
        self._running = True
        if self._light is None:
            self._round()
        else:
            asyncio.get_running_loop().call_soon(self._round)

    def _round(self) -> None:
        group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
        requests = [request for request, _ in group]
        try:
            light = (
                self._light is not None
                and self._thread.idle
                and self._clock() >= self._light_after
                and self._light(requests)
            )
        except Exception:  # a wrong guess costs a hand-off, never an answer
            log.exception("deciding where a commit round runs")
            light = False
        if not light:
            try:
                self._thread.submit(
                    self._apply_group, (requests,), lambda outcomes, error: self._finish(group, outcomes, error)
                )
            except BaseException as exc:  # (a thread shut down): its callers are told, never left waiting
                self._finish(group, None, exc)
                raise
            return
        started = self._clock()
        try:
            outcomes, error = self._apply_group(requests), None
        except BaseException as exc:  # told to its callers, as the thread does; KeyboardInterrupt goes on up
            outcomes, error = None, exc
        if self._clock() - started > LIGHT_STALL:
            # The disk is slow to take even a few KB (writeback throttling, a stalled device):
            # other connections would wait on it. Rounds go to the thread for a while.
            self._light_after = self._clock() + LIGHT_PAUSE
        self._finish(group, outcomes, error)
        if error is not None and not isinstance(error, Exception):
            raise error

    def _finish(self, group: list[tuple[R, Done]], outcomes: list[A] | None, error: BaseException | None) -> None:
        self._running = False
        if self._waiting:  # the writer starts on the next round while this one is answered
            self._start_round()
        try:
            self._on_round(len(group), outcomes)
        except Exception:  # a metrics hook must not leave the round's callers waiting
            log.exception("after a commit round")
        for index, (_, done) in enumerate(group):
            try:
                done(None, error) if error is not None else done(outcomes[index], None)  # type: ignore[index]
            except Exception:
                log.exception("answering a request of a commit round")
        if not self._running:
            for future in self._idle:
                if not future.done():
                    future.set_result(None)
            self._idle.clear()
