"""The native pass (`_native.c`), when it was compiled and is not switched off with BEA_NATIVE=0.

It is the fast path of the rules whose plain reference is in Python (decode.py, render.py,
timestamps.py, windows.py); both give the same results, which the tests check.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

module: ModuleType | None
try:
    module = importlib.import_module("batched_event_api.events._native")
except ImportError:  # pragma: no cover - only without a C compiler at install time
    module = None

ENABLED = module is not None and os.environ.get("BEA_NATIVE", "1") != "0"
native = module if ENABLED else None
