"""--partition: a strftime template of a window's start in UTC that gives its file's sub-directory
(a local output) or key prefix (a bucket), as Hive-style readers expect (`dt=%Y-%m-%d/hour=%H`).

The template is checked once, at start, by formatting it at instants across the accepted range:
every part it gives must be a plain name (letters, digits, `=`, `-`, `_`, `.`, `+`), not hidden
and not one readers skip (a leading `.` or `_`), never empty and never `..`; so no window's file
can land outside the output, whatever its time. A part is at most 255 bytes (a directory name's
limit) and the whole at most 960 (a bucket key's 1,024 with the file's name): else every create
would fail, retried forever. `%s` is refused: strftime takes it in the local time zone, so the
same window would go to another partition under another TZ.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_SAFE = re.compile(r"[A-Za-z0-9=_.+-]+")
_DIRECTIVE = re.compile(r"%(.)")
# How often each strftime field changes, in seconds: a day or anything coarser (a week, a month,
# a year) changes at a midnight UTC, so a day is what an interval must divide for those.
_DAY = 86_400
_PERIOD = {"S": 1, "M": 60, "H": 3600, "I": 3600, "p": 12 * 3600}
_FINER_THAN_A_SECOND = {"f"}
_STAMP = re.compile(r"user-events-(\d{8}-\d{6})")
# strftime's %s with any flags and width (glibc's), after a run of %% (each a literal '%').
_EPOCH = re.compile(r"(?<!%)(?:%%)*%[-_0^#]*[0-9]*[EO]?s")
NAME_MAX, PREFIX_MAX = 255, 960
# Window starts the template is tried at: the ends of the accepted range (with an aligned start
# below it), and instants whose fields all differ in width.
_SAMPLES = (
    datetime(1677, 12, 24, 0, 0, 0, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(2024, 7, 1, 2, 5, 9, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2262, 1, 8, 23, 59, 59, tzinfo=UTC),
)


class Partition:
    """A checked template (ValueError, saying why, when it is not one)."""

    def __init__(self, template: str) -> None:
        if not template:
            raise ValueError("is empty: leave it unset for no partition")
        if template.startswith("/"):
            raise ValueError(f"{template!r} starts with '/': it is a path under the output, not an absolute one")
        if "\0" in template:  # strftime would stop at it
            raise ValueError(f"{template!r} holds a NUL: a directory name may hold only letters, digits and = - _ . +")
        if any(not part for part in template.split("/")):
            raise ValueError(f"{template!r} has an empty part ('//' or a '/' at its end)")
        if _EPOCH.search(template):
            raise ValueError(
                f"{template!r} holds %s: strftime gives it in the server's local time zone, not UTC; "
                "use %Y, %m, %d, %H, %M"
            )
        for instant in _SAMPLES:
            try:
                formatted = instant.strftime(template)
            except ValueError as exc:
                raise ValueError(f"{template!r} is not a strftime template: {exc}") from None
            _check_prefix(template, formatted)
        self.template = template

    def period_ns(self) -> int | None:
        """How often the partition changes (ns): that of its finest field; None when it never
        does (no field of time). Strict windows stay inside one partition when their interval
        divides this."""
        fields = {match[1] for match in _DIRECTIVE.finditer(self.template.replace("%%", ""))}
        fields -= {"z", "Z"}  # always UTC
        if not fields:
            return None
        if fields & _FINER_THAN_A_SECOND:
            return 1_000  # microseconds: window names have whole seconds, so never bounded
        return min(_PERIOD.get(f, _DAY) for f in fields) * 1_000_000_000

    def prefix(self, stem: str) -> str:
        """The sub-directory of a window from its name's stem (`user-events-YYYYMMDD-HHMMSS`),
        ending in `/`."""
        match = _STAMP.fullmatch(stem)
        if match is None:
            raise ValueError(f"not a window's stem: {stem!r}")
        start = datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        formatted = start.strftime(self.template)
        _check_prefix(self.template, formatted)  # checked at start; again, as a name must never escape
        return formatted + "/"


def _check_prefix(template: str, formatted: str) -> None:
    if len(formatted.encode()) > PREFIX_MAX:
        raise ValueError(f"{template!r} gives a path of {len(formatted.encode())} bytes: at most {PREFIX_MAX} bytes")
    for part in formatted.split("/"):
        _check_part(template, part)


def _check_part(template: str, part: str) -> None:
    if not part:
        raise ValueError(f"{template!r} gives an empty directory name at some instants")
    if _SAFE.fullmatch(part) is None:
        raise ValueError(f"{template!r} gives {part!r}: a directory name may hold only letters, digits and = - _ . +")
    if len(part) > NAME_MAX:  # ASCII only, checked above
        raise ValueError(f"{template!r} gives a directory name of {len(part)} bytes: at most {NAME_MAX} bytes")
    if part.startswith((".", "_")):
        raise ValueError(f"{template!r} gives {part!r}: names starting with '.' or '_' are hidden from readers")
