"""The pending-bytes budget: request bodies received (or being received) and not yet written.

Bounding it bounds memory however many large bodies arrive at once. Bytes count once they have
arrived, never by what a client announces: a request is refused with 503 + Retry-After by its
Content-Length before any of its body is read when that cannot fit beside what is held now, or as
soon as what arrived passes the limit. Used from the event loop only.
"""

from __future__ import annotations

from batched_event_api.errors import RETRY_AFTER, ClientError


class PendingBytes:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def hold(self) -> Hold:
        """A request's share of the budget, given back with release() when the request is done with."""
        return Hold(self)


class Hold:
    __slots__ = ("budget", "taken")

    def __init__(self, budget: PendingBytes) -> None:
        self.budget = budget
        self.taken = 0

    def release(self) -> None:
        """Give the share back (again: nothing more)."""
        self.budget.used -= self.taken
        self.taken = 0

    def take(self, size: int) -> None:
        self.check(size)
        self.budget.used += size
        self.taken += size

    def check(self, size: int) -> None:
        """Refuse (503) a request whose next `size` bytes do not fit beside what is held now."""
        budget = self.budget
        if budget.used + size > budget.limit:
            raise ClientError(
                f"the server holds too many request bytes not yet written (limit {budget.limit}); retry shortly",
                status=503,
                # The connection stays open: the rest of the body is read and discarded (uvicorn
                # drops body bytes after the response), so a client that writes its whole body
                # before reading gets this answer instead of a reset.
                headers={"retry-after": RETRY_AFTER},
            )
