"""A store in memory: for tests of the output path without a server, and as the reference the
conformance suite holds every backend to."""

from __future__ import annotations

import threading

from batched_event_api.output.store import Finished, Identity, StoreError


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.objects: dict[str, tuple[bytes, Identity, dict[str, str | None]]] = {}
        self.failing = False  # every request fails with StoreError while set (an outage)
        self._lock = threading.Lock()

    def create(self, name: str, window: Finished) -> bool:
        data = window.data if window.data is not None else window.file.read()
        with self._lock:
            self._check()
            if name in self.objects:
                return False
            headers = {"content-type": window.content_type, "content-encoding": window.content_encoding}
            self.objects[name] = (bytes(data), Identity(len(data), window.sha256, window.window_id), headers)
            return True

    def identity(self, name: str) -> Identity | None:
        with self._lock:
            self._check()
            stored = self.objects.get(name)
            return stored[1] if stored else None

    def read(self, name: str) -> bytes:
        """An object's bytes (KeyError when there is none)."""
        with self._lock:
            return self.objects[name][0]

    def _check(self) -> None:
        if self.failing:
            raise StoreError("the memory store is failing (an outage simulated by a test)")
