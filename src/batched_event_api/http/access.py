"""What is kept of each request: the request metrics and one access line (never the body, never
the Authorization header)."""

from __future__ import annotations

import logging

from batched_event_api.metrics import Metrics

access_log = logging.getLogger("batched_event_api.access")


class RequestLog:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def record(
        self, method: str, path: str, route: str, status: int, seconds: float, events: int = 0, size: int = 0
    ) -> None:
        self.metrics.observe_request(route, status, seconds)
        if access_log.isEnabledFor(logging.INFO):  # one check when the line is off
            if not path.isprintable() or "\\" in path:  # a client's %0a must not start a forged log line
                path = escape(path)
            access_log.info(
                "%s %s %d events=%d bytes=%d duration_ms=%.2f",
                method,
                path,
                status,
                events,
                size,
                seconds * 1000,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "events": events,
                    "bytes": size,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def escape(text: str) -> str:
    """Text a client sent, safe on one log line: control and other unprintable characters as
    Python escapes (\\n, \\x1b, \\u2028), backslashes doubled."""
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in text)
