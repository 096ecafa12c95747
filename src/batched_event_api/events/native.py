"""The native pass (`_native.c`), when it was compiled and is not switched off with BEA_NATIVE=0.

It is the fast path of the rules whose plain reference is in Python (decode.py, render.py,
timestamps.py, windows.py); both give the same results, which the tests check. load() is how
every compiled module of the package is found (the commit pipeline's `_durable` too), and how
BEA_NATIVE=0 switches them all off.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled module, or None: not built (no C compiler at install time) or BEA_NATIVE=0."""
    if os.environ.get("BEA_NATIVE", "1") == "0":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - only without a C compiler at install time
        return None


native = load("batched_event_api.events._native")
