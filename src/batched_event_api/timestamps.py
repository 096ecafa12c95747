"""RFC 3339 timestamps with nanoseconds, parsed and rendered the way Go's `time` package does.

Python's `datetime` keeps only microseconds and no year 0, so the calendar arithmetic is done
here on plain integers (Howard Hinnant's days-from-civil algorithms).
"""

from __future__ import annotations

import re

import numpy as np

NS_PER_SECOND = 1_000_000_000

# Go's strict RFC 3339 parser: upper-case `T` and `Z`, two-digit fields, a fraction of at least
# one digit when the dot is present (digits past the ninth are truncated), offsets up to 23:59.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class TimeFormatError(ValueError):
    """The text is not an RFC 3339 timestamp with a zone."""


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_from_civil(year, month, day):  # type: ignore[no-untyped-def]
    """Days since 1970-01-01 of a proleptic Gregorian date. Plain arithmetic only, so the same
    code serves Python ints and numpy arrays of them."""
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


_PREFIX = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})", re.ASCII)
_minutes: dict[str, int | None] = {}


def _minute(prefix: str) -> int | None:
    """Epoch seconds of a valid `YYYY-MM-DDTHH:MM`, else None. Cached: a batch shares few minutes."""
    try:
        return _minutes[prefix]
    except KeyError:
        pass
    m = _PREFIX.fullmatch(prefix)
    value = None
    if m is not None:
        year, month, day, hour, minute = map(int, m.groups())
        if 1 <= month <= 12 and 1 <= day <= _days_in(year, month) and hour <= 23 and minute <= 59:
            value = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60
    if len(_minutes) >= 4096:
        _minutes.clear()
    _minutes[prefix] = value
    return value


def _days_in(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month]


def parse(text: str) -> tuple[int, str]:
    """Parse an RFC 3339 timestamp into (nanoseconds since the epoch in UTC, Go RFC3339Nano text).

    The text keeps the event's own offset (`Z` for a zero offset) and its fraction without
    trailing zeros, exactly as Go's `time.Time.Format(time.RFC3339Nano)` writes it.
    """
    # Fast path for the common shape `YYYY-MM-DDTHH:MM:SS[.f…]Z`; anything else takes the full parser.
    if text[-1:] == "Z" and len(text) >= 20 and text[16] == ":" and text.isascii():
        base = _minute(text[:16])
        seconds = text[17:19]
        fraction = text[19:-1]
        if (
            base is not None
            and seconds.isdigit()
            and seconds[0] < "6"
            and (not fraction or (fraction[0] == "." and fraction[1:].isdigit()))
        ):
            digits = fraction[1:10].rstrip("0")
            nanos = int(digits.ljust(9, "0")) if digits else 0
            if len(fraction) > 10 or fraction[-1:] == "0":
                text = text[:19] + ("." + digits if digits else "") + "Z"
            return (base + int(seconds)) * NS_PER_SECOND + nanos, text
    return _parse_any(text)


def _parse_any(text: str) -> tuple[int, str]:
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


def utc_stamp(ns: int) -> str:
    """`YYYYMMDD-HHMMSS` of an instant in UTC, as used in file names."""
    seconds = ns // NS_PER_SECOND
    days, rest = divmod(seconds, 86400)
    year, month, day = civil_from_days(days)
    return f"{year:04d}{month:02d}{day:02d}-{rest // 3600:02d}{rest // 60 % 60:02d}{rest % 60:02d}"


# -- many at once ------------------------------------------------------------------------------

# Field offsets of `YYYY-MM-DDTHH:MM:SS`, and the fixed characters between them.
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_SEPARATORS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":")}
_POW10 = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # weight of each fraction digit in ns
_MONTH_DAYS = np.array(_DAYS_IN_MONTH, dtype=np.int64)
# int64 nanoseconds cover 1677..2262; outside that the exact integer path takes over.
_VECTOR_YEARS = (1700, 2200)


def parse_many(texts: list[str]) -> tuple[list[int], list[str]]:
    """parse() over a batch. The common shape (UTC `Z`, canonical fraction) is parsed column-wise;
    every other text goes through parse() itself. Raises TimeFormatError with `.index` set."""
    n = len(texts)
    ns: list[int] = [0] * n
    out: list[str] = list(texts)
    slow = range(n)
    if n >= 32:
        fast, values = _parse_canonical_utc(texts)
        ns = values.tolist()
        slow = np.flatnonzero(~fast).tolist()
    for i in slow:
        try:
            ns[i], out[i] = parse(texts[i])
        except TimeFormatError as exc:
            exc.index = i  # type: ignore[attr-defined]
            raise
    return ns, out


def _parse_canonical_utc(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mask of texts of the form YYYY-MM-DDTHH:MM:SS[.d{1,9}]Z whose Go rendering is the text
    itself (no trailing zero in the fraction), and their instants in UTC nanoseconds."""
    n = len(texts)
    none = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    length = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    try:
        raw = np.array(texts, dtype="S30")  # longer texts are cut here, and excluded by length
    except UnicodeEncodeError:
        return none
    chars = raw.view(np.uint8).reshape(n, 30)
    digit = chars - np.uint8(48)  # wraps below '0': a digit is exactly a value under 10
    is_digit = digit < 10
    last = np.clip(length - 1, 0, 29)
    rows = np.arange(n)
    ok = (length >= 20) & (length <= 30) & (chars[rows, last] == ord("Z"))
    ok &= is_digit[:, _DIGITS].all(axis=1)
    for position, char in _SEPARATORS.items():
        ok &= chars[:, position] == char
    # A fraction: '.', then characters 20 .. length-2 all digits (1 to 9 of them), the last not 0.
    has_fraction = length > 20
    ok &= ~has_fraction | ((chars[:, 19] == ord(".")) & (length >= 22))
    in_fraction = np.arange(20, 29)[None, :] < last[:, None]
    ok &= (~in_fraction | is_digit[:, 20:29]).all(axis=1)
    ok &= ~has_fraction | (chars[rows, np.clip(length - 2, 0, 29)] != ord("0"))

    def number(*positions: int) -> np.ndarray:
        value = digit[:, positions[0]].astype(np.int64)
        for p in positions[1:]:
            value = value * 10 + digit[:, p]
        return value

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    ok &= (year >= _VECTOR_YEARS[0]) & (year <= _VECTOR_YEARS[1]) & (month >= 1) & (month <= 12)
    month = np.clip(month, 1, 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok &= (day >= 1) & (day <= _MONTH_DAYS[month] + ((month == 2) & leap))
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    days = days_from_civil(year, month, day)
    nanos = np.zeros(n, dtype=np.int64)
    for k in range(9):  # fraction digit k weighs 10^(8-k) ns, where the fraction has it
        nanos += np.where(in_fraction[:, k], digit[:, 20 + k], 0).astype(np.int64) * int(_POW10[k])
    values = (days * 86400 + hour * 3600 + minute * 60 + second) * NS_PER_SECOND + nanos
    return ok, np.where(ok, values, 0)
