"""Idempotency keys already applied, each with its request's event count (a resend is answered as
a replay with the count it had) and the time it was applied. A key is kept for `retention`
seconds, whatever other clients send; the memory the keys take is bounded, and a new key that
would pass the bound is refused (retryable) rather than pushing out a key still within its time.
Restored from the journal at start."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

# What one remembered key costs in memory beyond its characters: the str object's header, the
# ordered dict's entry and node, the packed int (tracemalloc: about 176 bytes).
KEY_OVERHEAD = 180
_AT = 1 << 34  # a key's value packs its events and its time in whole seconds: events * _AT + at


def key_cost(key: str) -> int:
    return len(key) + KEY_OVERHEAD


class KeyStore:
    def __init__(self, retention: float, max_bytes: int) -> None:
        self.retention = retention
        self.max_bytes = max_bytes
        self.bytes = 0
        self._keys: OrderedDict[str, int] = OrderedDict()  # oldest first, events * _AT + at

    def get(self, key: str) -> int | None:
        entry = self._keys.get(key)
        return entry // _AT if entry is not None else None

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def items(self) -> list[tuple[str, int, float]]:
        return [(key, *divmod(value, _AT)) for key, value in self._keys.items()]

    def has_room(self, keys: Iterable[str], now: float) -> bool:
        """Can these new keys be remembered for their whole retention (after the expired go)?"""
        self.expire(now)
        return self.bytes + sum(key_cost(k) for k in keys if k not in self._keys) <= self.max_bytes

    def remember(self, key: str, events: int, at: float) -> None:
        """The newest key goes last."""
        old = self._keys.pop(key, None)
        if old is None:
            self.bytes += key_cost(key)
        self._keys[key] = events * _AT + int(at)

    def expire(self, now: float) -> None:
        """Forget the keys applied longer than `retention` ago."""
        horizon = now - self.retention
        while self._keys:
            key, value = next(iter(self._keys.items()))
            if value % _AT > horizon:
                return
            del self._keys[key]
            self.bytes -= key_cost(key)

    def expiring(self, now: float, limit: int) -> int:
        """How many keys expire() would forget now, counted up to `limit`."""
        horizon, count = now - self.retention, 0
        for value in self._keys.values():
            if count >= limit or value % _AT > horizon:
                break
            count += 1
        return count

    def oldest(self) -> float | None:
        """When the oldest remembered key was applied."""
        return next(iter(self._keys.values())) % _AT if self._keys else None

    def replace(self, items: Iterable[tuple[str, int, float]]) -> None:
        """Exactly these keys (a snapshot's), oldest first."""
        self._keys = OrderedDict()
        self.bytes = 0
        for key, events, at in items:
            self.remember(key, events, at)
