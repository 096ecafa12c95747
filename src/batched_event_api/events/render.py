"""Events to CSV bytes, byte-identical to the reference's Go `encoding/csv` and `strconv` output."""

from __future__ import annotations

import re
from collections.abc import Sequence

from batched_event_api.events.decode import Decoded

# Go's unicode.IsSpace: not Python's str.isspace, which also counts U+001C..U+001F.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_SPECIAL = re.compile(r'[,"\r\n]')

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


def csv_line(fields: Sequence[str]) -> str:
    """One record as Go's csv.Writer writes it, without its `\n` (rows are joined by the writer)."""
    return ",".join(map(csv_field, fields))


def csv_record(fields: Sequence[str]) -> str:
    """One record as Go's csv.Writer writes it (no CRLF, `\n` terminated)."""
    return csv_line(fields) + "\n"


_BOOL_TEXT = ("false", "true")


def render_rows(decoded: Decoded) -> list[str]:
    """One CSV line per event (without its newline). An explicit null renders as the field's zero
    value. (The native pass renders the same lines in C; this is the reference.)"""
    return [
        csv_line(
            (
                t,
                e.uuid or "",
                str(e.id or 0),
                _BOOL_TEXT[bool(e.active)],
                e.email or "",
                e.phone or "",
                e.description or "",
                go_float(0.0 if c is None else c),
            )
        )
        for e, t, c in zip(decoded.events, decoded.time_texts, decoded.credits)
    ]
