"""Where the tests find the clone's files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"  # the reference's own output and rendering vectors
SEED = ROOT / "examples"  # the sample datasets the README sends
