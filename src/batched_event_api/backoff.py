"""Exponential backoff between retries, the one rule the idle commit, the uploader and `send` share."""

from __future__ import annotations


class Backoff:
    """The delay before the next retry: `first` seconds, doubled after each failure up to `most`,
    and back to `first` after a success."""

    __slots__ = ("first", "most", "delay")

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self.delay = first

    def failed(self) -> float:
        """A try failed: the delay to wait now (the next one is twice as long, up to `most`)."""
        delay = self.delay
        self.delay = min(delay * 2, self.most)
        return delay

    def succeeded(self) -> None:
        self.delay = self.first
