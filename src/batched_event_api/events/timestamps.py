"""RFC 3339 timestamps with nanoseconds, parsed and rendered the way Go's `time` package does.

Python's `datetime` keeps only microseconds and no year 0, so the calendar arithmetic is done
here on plain integers (Howard Hinnant's days-from-civil algorithms).
"""

from __future__ import annotations

import re

NS_PER_SECOND = 1_000_000_000

# Go's strict RFC 3339 parser: upper-case `T` and `Z`, two-digit fields, a fraction of at least
# one digit when the dot is present (digits past the ninth are truncated), offsets up to 23:59.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# The instants an event may have: EARLIEST <= t < LATEST in UTC, offset applied (the reference
# takes years 0001-9999). Every time is then an int64 of nanoseconds (what the native pass, the
# window scan and the journal hold), with room for a window of up to MAX_INTERVAL on either side
# (an aligned start below EARLIEST, a bound start + interval above LATEST: int64 reaches about
# 100 days further each way), and every window is named with a four-digit year.
EARLIEST_TEXT, LATEST_TEXT = "1678-01-01T00:00:00Z", "2262-01-01T00:00:00Z"
EARLIEST_NS = -9_214_560_000 * NS_PER_SECOND  # 1678-01-01T00:00:00Z; _native.c holds the same two
LATEST_NS = 9_214_646_400 * NS_PER_SECOND  # 2262-01-01T00:00:00Z
MAX_INTERVAL_NS = 7 * 86400 * NS_PER_SECOND  # the longest window (--interval 168h)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
assert _INT64_MIN <= EARLIEST_NS - MAX_INTERVAL_NS and LATEST_NS + MAX_INTERVAL_NS <= _INT64_MAX


class TimeFormatError(ValueError):
    """The text is not an RFC 3339 timestamp with a zone."""


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    year = year - (month <= 2)
    era = year // 400
    yoe = year - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of a count of days since 1970-01-01."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _days_in(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month]


def parse(text: str) -> tuple[int, str]:
    """Parse an RFC 3339 timestamp into (nanoseconds since the epoch in UTC, Go RFC3339Nano text).

    The text keeps the event's own offset (`Z` for a zero offset) and its fraction without
    trailing zeros, exactly as Go's `time.Time.Format(time.RFC3339Nano)` writes it. (The native
    pass has the same rule in C; this is the reference it is tested against.)
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise TimeFormatError("expected an RFC 3339 timestamp with a zone, like 2024-07-01T02:03:04.5Z")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = m.group(7, 8, 9, 10)
    if not 1 <= month <= 12:
        raise TimeFormatError("month out of range")
    if not 1 <= day <= _days_in(year, month):
        raise TimeFormatError("day out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise TimeFormatError("time of day out of range")
    offset = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise TimeFormatError("zone offset out of range")
        offset = (oh * 60 + om) * 60
        if sign == "-":
            offset = -offset
    digits = (fraction or "")[:9].rstrip("0")
    nanos = int(digits.ljust(9, "0")) if digits else 0
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    zone = "Z" if offset == 0 else text[-6:]
    rendered = text[:19] + ("." + digits if digits else "") + zone
    return seconds * NS_PER_SECOND + nanos, rendered


class TimeRangeError(TimeFormatError):
    """A well-formed time outside EARLIEST..LATEST: no window could be named or ordered for it."""


RANGE_MESSAGE = f"time outside the accepted range {EARLIEST_TEXT} <= time < {LATEST_TEXT} (in UTC)"


def first_out_of_range(times: list[int]) -> int | None:
    """The index of the first time outside EARLIEST..LATEST, or None (the common case: one min and
    one max over the batch)."""
    if not times or (min(times) >= EARLIEST_NS and max(times) < LATEST_NS):
        return None
    return next(i for i, t in enumerate(times) if not EARLIEST_NS <= t < LATEST_NS)


def utc_stamp(ns: int) -> str:
    """`YYYYMMDD-HHMMSS` of an instant in UTC, as used in file names (four-digit years for every
    window start in the accepted range, with room for an aligned start)."""
    seconds = ns // NS_PER_SECOND
    days, rest = divmod(seconds, 86400)
    year, month, day = civil_from_days(days)
    return f"{year:04d}{month:02d}{day:02d}-{rest // 3600:02d}{rest // 60 % 60:02d}{rest % 60:02d}"


def parse_many(texts: list[str]) -> tuple[list[int], list[str]]:
    """parse() over a batch; TimeFormatError with `.index` set names the first bad text."""
    ns: list[int] = []
    out: list[str] = []
    for i, text in enumerate(texts):
        try:
            value, rendered = parse(text)
        except TimeFormatError as exc:
            exc.index = i  # type: ignore[attr-defined]
            raise
        ns.append(value)
        out.append(rendered)
    return ns, out
