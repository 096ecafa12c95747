"""Rendered CSV rows as the commit pipeline takes them: in the blocks they were rendered in, never
copied, cut into byte ranges per window."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class RowBlock:
    """Consecutive CSV rows in one buffer; ends[i] is the offset just past row i's newline."""

    data: bytes | memoryview
    ends: Sequence[int]  # an int64 view of the native pass's buffer, or a list

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> RowBlock:
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        if len(data) == sum(map(len, lines)) + len(lines):  # ASCII: a character is a byte
            sizes = [len(line) + 1 for line in lines]
        else:
            sizes = [len(line.encode()) + 1 for line in lines]
        return cls(data, list(accumulate(sizes)))


class Rows:
    """The rendered rows of one request, kept in the blocks they were rendered in (no copies)."""

    def __init__(self, blocks: Iterable[RowBlock]) -> None:
        self.blocks = [b for b in blocks if len(b.ends)]
        self._firsts = [0]  # index of each block's first row
        for block in self.blocks:
            self._firsts.append(self._firsts[-1] + len(block.ends))

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> Rows:
        return cls([RowBlock.from_lines(lines)])

    def __len__(self) -> int:
        return self._firsts[-1]

    @property
    def size(self) -> int:
        """Bytes of all rows."""
        return sum(int(block.ends[-1]) for block in self.blocks)

    def chunks(self, first: int, stop: int) -> list[memoryview]:
        """The bytes of rows [first, stop), newlines included, as views into the blocks."""
        out = []
        index = bisect.bisect_right(self._firsts, first) - 1
        while first < stop:
            block, base = self.blocks[index], self._firsts[index]
            last = min(stop, self._firsts[index + 1])
            begin = int(block.ends[first - base - 1]) if first > base else 0
            out.append(memoryview(block.data)[begin : int(block.ends[last - base - 1])])
            first = last
            index += 1
        return out

    def gather(self, runs: list[tuple[int, int]]) -> list[memoryview]:
        """The bytes of several row ranges [first, stop), in order (a window's rows of a request
        whose events are spread over several windows: often one row per range)."""
        if len(self.blocks) != 1:
            return [chunk for first, stop in runs for chunk in self.chunks(first, stop)]
        block = self.blocks[0]
        data, ends = memoryview(block.data), block.ends
        return [data[(int(ends[first - 1]) if first else 0) : int(ends[stop - 1])] for first, stop in runs]

    def text(self) -> str:
        """All rows as one string (tests and tools; the writer uses chunks)."""
        return b"".join(self.chunks(0, len(self))).decode()
