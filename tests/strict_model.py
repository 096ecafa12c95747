"""A plain model of strict windows (`--align interval`, SPEC section 3), written independently of
the writer: requests of (time, row) applied one at a time, the files they leave, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from batched_event_api.events.timestamps import utc_stamp


@dataclass
class _File:
    name: str
    late: bool
    data: bytes


@dataclass
class StrictModel:
    interval: int
    lateness: int = 0
    max_open: int = 16
    max_file_bytes: int | None = None
    header: bytes = b""
    files: dict[str, bytes] = field(default_factory=dict)  # committed
    open: dict[int, _File] = field(default_factory=dict)  # by window start
    watermark: int | None = None
    _used: set[str] = field(default_factory=set)

    def apply(self, request: list[tuple[int, bytes]]) -> None:
        """One request: each row to the window of its time, then the watermark commits."""
        before = self.watermark
        by_window: dict[int, list[bytes]] = {}
        for t, row in request:
            by_window.setdefault(t - t % self.interval, []).append(row)
        for start, rows in by_window.items():
            if start not in self.open:
                while len(self.open) >= self.max_open:
                    self._commit(min(self.open))
                late = before is not None and start + self.interval + self.lateness <= before
                self.open[start] = self._new(start, late)
            for row in rows:
                f = self.open[start]
                limit = self.max_file_bytes
                if limit is not None and len(f.data) > len(self.header) and len(f.data) + len(row) > limit:
                    self._commit(start)
                    self.open[start] = f = self._new(start, f.late)
                f.data += row
            if self.max_file_bytes is not None and len(self.open[start].data) >= self.max_file_bytes:
                self._commit(start)
        if request:
            self.watermark = max([t for t, _ in request] + ([before] if before is not None else []))
            for start in sorted(self.open):
                f = self.open[start]
                if not f.late and start + self.interval + self.lateness <= self.watermark:
                    self._commit(start)

    def close_all(self) -> dict[str, bytes]:
        """Idle close or shutdown: every open window committed; the files."""
        for start in sorted(self.open):
            self._commit(start)
        return dict(sorted(self.files.items()))

    def _new(self, start: int, late: bool) -> _File:
        stem = f"user-events-{utc_stamp(start)}"
        name, n = stem + ".csv", 0
        while name in self._used:
            n += 1
            name = f"{stem}-{n}.csv"
        self._used.add(name)
        return _File(name, late, self.header)

    def _commit(self, start: int) -> None:
        f = self.open.pop(start)
        self.files[f.name] = f.data
