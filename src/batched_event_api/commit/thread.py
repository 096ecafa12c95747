"""One thread that runs calls in the order they are given, each outcome handed back to the event loop.

All writer calls go through one of these: that is their serialization. It is a one-worker
ThreadPoolExecutor with less in between: a call is a queue entry and its outcome one
call_soon_threadsafe of the caller's callback, where run_in_executor adds a concurrent Future
with its condition and a chained asyncio Future per call (what that costs: docs/performance.md).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], object]  # told (result, None) or (None, error)


class SerialThread:
    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, Done, Callable, tuple] | None]
        self._calls = queue.SimpleQueue()
        # A daemon: a process that exits without shutdown() (it never served) is not held up.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._unanswered = 0  # calls submitted whose outcome the event loop has not had yet

    @property
    def idle(self) -> bool:
        """No call is queued or running: what the thread works on may be used from the loop."""
        return self._unanswered == 0

    def submit(self, fn: Callable[..., T], args: tuple, done: Done) -> None:
        """Run fn(*args) on the thread after every call given before it; then done(result, error)
        on the event loop."""
        self._unanswered += 1
        self._calls.put((asyncio.get_running_loop(), self._answered(done), fn, args))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """submit(), awaited."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.submit(fn, args, lambda result, error: _settle(future, result, error))
        return await future

    def shutdown(self) -> None:
        """Wait for the calls given so far, then end the thread."""
        self._calls.put(None)
        self._thread.join()

    def _answered(self, done: Done) -> Done:
        def answered(outcome: Any, error: BaseException | None) -> None:
            self._unanswered -= 1
            done(outcome, error)

        return answered

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, done, fn, args = item
            try:
                outcome, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, as an executor would
                outcome, error = None, exc
            loop.call_soon_threadsafe(done, outcome, error)


def _settle(future: asyncio.Future, outcome: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)
