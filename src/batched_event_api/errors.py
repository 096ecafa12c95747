"""Errors a client can cause, with the status and JSON body they are answered with."""

from __future__ import annotations

from typing import Any

RETRY_AFTER = "1"  # seconds a client refused for a full budget or backlog waits before it tries again


class ClientError(Exception):
    """A refused request: nothing of it is written."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.line is not None:
            body["line"] = self.line
        if self.field is not None:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        field = f"{self.field}: " if self.field is not None else ""
        return f"{where}{field}{self.message}"


class EventError(ClientError):
    """A line of the body is not a valid event (400), or too long (413)."""


class StorageError(Exception):
    """The output directory cannot take the write (full, read-only, missing): answered 503."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
