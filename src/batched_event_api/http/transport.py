"""A connection's transport that sends a response's head with its body, in one send()."""

from __future__ import annotations

import asyncio
from typing import Any


class HeadJoiningTransport:
    """A connection's transport that holds a response's head (status line and headers), handed
    to it with hold(), until the next write, so that a small answer leaves in one send() rather
    than two. Everything else is the real transport's."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def hold(self, head: bytes) -> None:
        """A response's head: sent with the next write (or at flush or close)."""
        self.flush()
        self._head = head

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def write_whole(self, data: bytes) -> None:
        """A whole response, written as it is."""
        self.flush()
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, ...
        return getattr(self._transport, name)
