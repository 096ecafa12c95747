"""What a directory holds at one instant: its files by name, their sizes, their rows."""

from __future__ import annotations

from pathlib import Path


def csv_files(directory: Path) -> dict[str, bytes]:
    """The committed files of a directory (what a `*.csv` reader sees), by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.csv"))}


def window_files(directory: Path) -> dict[str, bytes]:
    """The committed files, compressed or not."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.csv*"))}


def tree(directory: Path) -> dict[str, bytes]:
    """Every file of the directory (the journal and part files too) but the lock, by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != ".lock"}


def sizes(directory: Path) -> dict[str, int]:
    """Every file's size (the journal's included): what a request's writes change."""
    return {p.name: p.stat().st_size for p in directory.iterdir()} if directory.exists() else {}


def finished_rows(directory: Path) -> list[str]:
    """The rows of the committed files, file by file in name order."""
    return [row for p in sorted(directory.glob("*.csv")) for row in p.read_text().splitlines()]


def committed_rows(directory: Path) -> list[str]:
    """Every row of the finished files, and of the open window's part file."""
    rows = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".csv") or path.name.endswith(".inprogress"):
            rows += path.read_text().splitlines()
    return rows
