"""The bearer token that guards ingest and /metrics when one is configured."""

from __future__ import annotations

import hmac

from batched_event_api.errors import ClientError


class BearerAuth:
    """`Authorization: Bearer <token>` when a token is configured, compared in constant time."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    def check(self, authorization: bytes) -> None:
        if self._expected is not None and not hmac.compare_digest(authorization, self._expected):
            raise ClientError(
                "missing or wrong bearer token",
                status=401,
                headers={"www-authenticate": 'Bearer realm="batched-event-api"'},
            )
