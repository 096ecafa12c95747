"""Idempotency keys already applied: the newest `limit`, each with its request's event count, so
a resend is answered as a replay with the count it had. Restored from the journal at start."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator


class KeyStore:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: OrderedDict[str, int] = OrderedDict()

    def get(self, key: str) -> int | None:
        return self._events.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._events

    def __iter__(self) -> Iterator[str]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def items(self) -> list[tuple[str, int]]:
        return list(self._events.items())

    def remember(self, key: str, events: int) -> None:
        """The newest key goes last; past the limit the oldest are forgotten."""
        self._events[key] = events
        self._events.move_to_end(key)
        while len(self._events) > self.limit:
            self._events.popitem(last=False)

    def replace(self, items: Iterable[tuple[str, int]]) -> None:
        """Exactly these keys (a snapshot's), oldest first."""
        self._events = OrderedDict(items)
