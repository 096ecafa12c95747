"""Waiting for a condition, not for a guessed delay."""

from __future__ import annotations

import time
from typing import Any


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    """Poll until predicate() is true (a condition, not a guessed delay); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
