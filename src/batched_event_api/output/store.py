"""The storage seam, in the spirit of Rust's object_store: what the output path asks of any place
finished windows go (a bucket, a directory, memory), and the one rule for a taken name.

A store does two things: create an object under a name only if that name is free, and say what
the object under a taken name is. With those, `publish` puts a window in the store exactly once
under SIGKILL or power loss at any point: a taken name is either this window's own earlier create
(a crash came before the window was released) and then it is done, or another window's, and then
the window takes the next free -N name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol

from batched_event_api.commit.partfiles import names_from


class StoreError(Exception):
    """The store could not be reached or refused the request (retried by the uploader)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What is known of a stored object: enough to recognise a window's own earlier create."""

    size: int
    sha256: str | None
    window_id: str | None = None  # the id the writer gave the window (None: from before ids)


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished window on its way into a store."""

    file: BinaryIO  # open for reading at its start
    size: int
    sha256: str  # of the file's bytes
    window_id: str | None  # None: a file from before window ids
    data: bytes | None = None  # the whole file when it was read already (a small window), else None
    content_type: str = "text/csv"
    content_encoding: str | None = None  # "gzip" for a .csv.gz window, "zstd" for a .csv.zst


class Store(Protocol):
    """Where finished windows go. Methods are called from several threads at once."""

    url: str  # where names go, for log lines (never with a credential)

    def create(self, name: str, window: Finished) -> bool:
        """Create `name` with the window's bytes, its SHA-256 and id, only if no object has that
        name: True when created, False when the name is taken (by any object). StoreError when
        the store fails; nothing is then visible under `name`."""
        ...

    def identity(self, name: str) -> Identity | None:
        """What the object under `name` is, or None when there is none. StoreError when the
        store fails."""
        ...


Outcome = Literal["created", "next_name", "already_there"]


def publish(store: Store, stem: str, suffix: str, window: Finished) -> tuple[str, Outcome]:
    """Put the window in the store once: under `stem + suffix`, else the first -N name that is
    free or is this window's own earlier create. Returns the name and how it got there."""
    for n, name in enumerate(names_from(stem, suffix)):
        if n:
            window.file.seek(0)  # a failed create may have read it
        if store.create(name, window):
            return name, "created" if n == 0 else "next_name"
        if is_own(store.identity(name), window):
            return name, "already_there"
    raise AssertionError("unreachable: names_from never ends")


def is_own(there: Identity | None, window: Finished) -> bool:
    """Is the object under a taken name this window's own earlier create? By the window's id; a
    file from before ids by size and SHA-256, and only against an object without an id (one with
    an id came from another window's file)."""
    if there is None:
        return False
    if window.window_id is not None:
        return there.window_id == window.window_id
    return there.window_id is None and (there.size, there.sha256) == (window.size, window.sha256)
