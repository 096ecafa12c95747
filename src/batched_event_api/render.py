"""Events to CSV bytes, byte-identical to the reference's Go `encoding/csv` and `strconv` output."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from .decode import Decoded

# Go's unicode.IsSpace: not Python's str.isspace, which also counts U+001C..U+001F.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_SPECIAL = re.compile(r'[,"\r\n]')
# In a column joined with newlines: a value after the first that starts with a space (a newline
# inside a value is caught by counting), or a later value that is exactly `\.`.
_VALUE_START = re.compile("\n[" + re.escape(GO_SPACE.replace("\n", "")) + r"]|\n\\\.(?:\n|\Z)")

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


def go_floats(values: list[float]) -> list[str]:
    """go_float over a column. msgspec's encoder writes the same shortest round-trip digits in C;
    only values it writes with an exponent or a trailing `.0` need the Go fix-up."""
    if not values:
        return []
    encoded = msgspec.json.encode(values)
    texts = encoded[1:-1].decode().split(",")
    if b"e" in encoded or b".0," in encoded or encoded.endswith(b".0]"):
        texts = [go_float(float(t)) if "e" in t or t.endswith(".0") else t for t in texts]
    return texts


_BOOL_TEXT = ("false", "true")
_SMALL_BATCH = 16  # below this, per-row rendering beats setting up the columns


def render_rows(decoded: Decoded) -> list[str]:
    """One CSV line per event (without its newline), built column by column."""
    events = decoded.events
    if len(events) < _SMALL_BATCH:
        return [
            csv_line((t, e.uuid or "", str(e.id or 0), _BOOL_TEXT[bool(e.active)], e.email or "", e.phone or "",
                      e.description or "", go_float(0.0 if c is None else c)))
            for e, t, c in zip(events, decoded.time_texts, decoded.credits)
        ]
    uuid = [e.uuid for e in events]
    ids = [e.id for e in events]
    active = [e.active for e in events]
    email = [e.email for e in events]
    phone = [e.phone for e in events]
    description = [e.description for e in events]
    credits = decoded.credits
    # An explicit null renders as the field's zero value.
    uuid, email, phone, description = (_or(column, "") for column in (uuid, email, phone, description))
    ids, active = _or(ids, 0), _or(active, False)
    text = (uuid, email, phone, description)  # the only columns that can need quotes
    fields = (
        decoded.time_texts,
        uuid,
        list(map(str, ids)),
        list(map(_BOOL_TEXT.__getitem__, active)),
        email,
        phone,
        description,
        go_floats(_or(credits, 0.0)),
    )
    rows = list(map(",".join, zip(*fields)))
    if all(map(_column_is_plain, text)):
        return rows
    return list(map(csv_line, zip(*fields)))


def _or(column: list, zero: object) -> list:
    return [zero if v is None else v for v in column] if None in column else column


def _column_is_plain(column: list[str]) -> bool:
    """No value of a string column needs quotes (checked over the column at once, not per value)."""
    if not column:
        return True
    joined = "\n".join(column)
    return (
        joined.count("\n") == len(column) - 1
        and "," not in joined
        and '"' not in joined
        and "\r" not in joined
        and not needs_quotes(column[0])
        and _VALUE_START.search(joined) is None
    )
