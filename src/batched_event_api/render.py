"""Events to CSV bytes, byte-identical to the reference's Go `encoding/csv` and `strconv` output."""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import attrgetter

import msgspec

from .decode import Decoded

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


_COLUMN = {name: attrgetter(name) for name in COLUMNS}
_BOOL_TEXT = ("false", "true")


def render_rows(decoded: Decoded) -> list[str]:
    """One CSV line per event (without its newline), built column by column."""
    events = decoded.events
    columns = {name: list(map(_COLUMN[name], events)) for name in COLUMNS[1:]}
    if decoded.nulls:  # an explicit null renders as the field's zero value
        for name, zero in (("uuid", ""), ("id", 0), ("active", False), ("email", ""), ("phone", ""),
                           ("description", ""), ("credits", 0.0)):
            column = columns[name]
            if None in column:
                columns[name] = [zero if v is None else v for v in column]
    fields = (
        decoded.time_texts,
        columns["uuid"],
        list(map(str, columns["id"])),
        list(map(_BOOL_TEXT.__getitem__, columns["active"])),
        columns["email"],
        columns["phone"],
        columns["description"],
        go_floats(columns["credits"]),
    )
    rows = list(map(",".join, zip(*fields)))
    if batch_is_plain("\n".join(rows) + "\n", len(rows)):
        return rows
    return [csv_record(record)[:-1] for record in zip(*fields)]
