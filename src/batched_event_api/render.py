"""Events to CSV bytes, byte-identical to the reference's Go `encoding/csv` and `strconv` output."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .decode import Event

# Go's unicode.IsSpace: not Python's str.isspace, which also counts U+001C..U+001F.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_SPECIAL = re.compile(r'[,"\r\n]')
# In a whole rendered batch: a field that starts with a space or is exactly `\.`. Only the
# string columns can, and each of them follows a comma.
_FIELD_START = re.compile("," + "[" + re.escape(GO_SPACE) + "]" + r"|,\\\.(?:,|\n)")

COLUMNS = ("time", "uuid", "id", "active", "email", "phone", "description", "credits")


def go_float(x: float) -> str:
    """Go's strconv.FormatFloat(x, 'f', -1, 64): shortest round-trip digits, never an exponent."""
    r = repr(x)
    if "e" not in r:
        return r[:-2] if r.endswith(".0") else r
    mantissa, _, exponent = r.partition("e")
    sign = "-" if mantissa[0] == "-" else ""
    whole, _, frac = mantissa.lstrip("-").partition(".")
    digits = (whole + frac).rstrip("0") or "0"
    point = len(whole) + int(exponent)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def needs_quotes(field: str) -> bool:
    """Go encoding/csv's fieldNeedsQuotes for a comma separator."""
    if not field:
        return False
    return field == "\\." or _SPECIAL.search(field) is not None or field[0] in GO_SPACE


def csv_field(field: str) -> str:
    if needs_quotes(field):
        return '"' + field.replace('"', '""') + '"'
    return field


def csv_record(fields: Sequence[str]) -> str:
    """One record as Go's csv.Writer writes it (no CRLF, `\\n` terminated)."""
    return ",".join(map(csv_field, fields)) + "\n"


def batch_is_plain(text: str, rows: int) -> bool:
    """True when no field of a batch rendered without quoting needed quotes.

    Checked once over the whole batch instead of per field: the fixed columns never hold a comma,
    quote or newline, so any extra one must come from a string field.
    """
    return (
        text.count(",") == 7 * rows
        and text.count("\n") == rows
        and '"' not in text
        and "\r" not in text
        and _FIELD_START.search(text) is None
    )


def event_fields(event: Event, time_text: str) -> tuple[str, ...]:
    """The eight column values of an event, unquoted, in COLUMNS order."""
    e = event
    return (
        time_text,
        e.uuid or "",
        str(e.id or 0),
        "true" if e.active else "false",
        e.email or "",
        e.phone or "",
        e.description or "",
        "0" if e.credits is None else go_float(e.credits),
    )


def render_rows(events: Sequence[Event], time_texts: Sequence[str]) -> list[str]:
    """One CSV line per event, in order."""
    records = list(map(event_fields, events, time_texts))
    rows = [",".join(r) + "\n" for r in records]
    if batch_is_plain("".join(rows), len(rows)):
        return rows
    return list(map(csv_record, records))
