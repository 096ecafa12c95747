"""NDJSON bytes to typed, validated events. Pure: no I/O, no clock.

The whole body is decoded in one msgspec call; only when that fails (or the body has quirks the
fast path cannot tell apart) is it decoded again line by line to name the exact line and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, cast

import msgspec

from batched_event_api.errors import EventError
from batched_event_api.events import timestamps

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Event(msgspec.Struct, gc=False):
    """One user event. A missing field takes its zero value here; an explicit null stays None and
    is rendered as the zero value too. (gc=False: plain values, no cycles, cheaper in bulk.)"""

    time: str
    uuid: str | None = ""
    id: Int64 | None = 0
    active: bool | None = False
    email: str | None = ""
    phone: str | None = ""
    description: str | None = ""
    credits: float | None = None  # None when missing, so that 0.0 means a literal zero (see -0 below)


class _CreditsLiteral(msgspec.Struct):
    # msgspec reads the integer literal -0 as int 0, losing the sign Go keeps: re-read it raw.
    credits: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


_EVENT = msgspec.json.Decoder(Event)
_CREDITS = msgspec.json.Decoder(_CreditsLiteral)
_NEGATIVE_ZERO = re.compile(rb":\s*-0(?![0-9.eE])")
_FIELD_PATH = re.compile(r" - at `\$\.?([^`\[]*)[^`]*`$")


@dataclass(frozen=True, slots=True)
class Decoded:
    """The events of one body, with each event's instant (UTC ns) and Go-rendered time text."""

    events: list[Event]
    times: list[int]
    time_texts: list[str]
    credits: list[float | None]


def slices(body: bytes | bytearray, size: int) -> Iterator[tuple[int, int]]:
    """Bounds (start, end) of whole-line pieces of about `size` bytes: large bodies are prepared
    piece by piece, so their events never all exist at once."""
    start = 0
    while start < len(body):
        cut = body.find(b"\n", start + size)
        end = len(body) if cut < 0 else cut + 1
        yield start, end
        start = end


def decode(body: bytes | bytearray, *, max_line: int) -> Decoded:
    """Decode and validate a whole NDJSON body, or raise EventError naming the first bad line."""
    if len(body) > max_line:
        _check_line_lengths(body, max_line)
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError("invalid UTF-8", line=body.count(b"\n", 0, exc.start) + 1) from None
    events = _decode_fast(body, body.count(b"\n"))
    if events is None:
        events = _decode_by_line(body)
    credits = [e.credits for e in events]
    if 0.0 in credits and _NEGATIVE_ZERO.search(body):  # only a literal zero can have been -0
        _restore_negative_zero(body, events, credits)
    times, texts = _parse_times(body, [e.time for e in events])
    return Decoded(events, times, texts, credits)


def _parse_times(body: bytes | bytearray, texts: list[str]) -> tuple[list[int], list[str]]:
    """The events' instants and texts, or EventError for the first bad or out-of-range time."""
    try:
        times, rendered = timestamps.parse_many(texts)
    except timestamps.TimeFormatError as exc:
        bad, message = exc.index, str(exc)  # type: ignore[attr-defined]
        times = timestamps.parse_many(texts[:bad])[0]  # rare: an out-of-range time may come first
    else:
        bad, message = len(times), ""
    late = timestamps.first_out_of_range(times)
    if late is not None:
        bad, message = late, timestamps.RANGE_MESSAGE
    if bad < len(texts):
        raise EventError(message, line=line_of(body, bad), field="time")
    return times, rendered


def _decode_fast(body: bytes | bytearray, newlines: int) -> list[Event] | None:
    """All events in one call, or None when the body needs the line-by-line path."""
    if not body or body.isspace():
        return []
    try:
        events = _EVENT.decode_lines(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # the line by line path names the line
        return None
    # decode_lines skips blank lines and lets an object span lines; one object per line is the
    # contract. Neither quirk can add events, so equal counts mean neither is there.
    if len(events) == newlines + (not body.endswith(b"\n")):
        return events
    nonblank = sum(1 for line in body.split(b"\n") if line.strip())
    return events if len(events) == nonblank else None


def _decode_by_line(body: bytes | bytearray) -> list[Event]:
    events = []
    for number, line in enumerate(cast(bytes, body).split(b"\n"), start=1):  # bytearray's split: typed alike
        if not line.strip():
            continue
        try:
            events.append(_EVENT.decode(line))
        except msgspec.ValidationError as exc:
            raise _validation_error(str(exc), number) from None
        except msgspec.DecodeError as exc:
            raise EventError(f"invalid JSON: {exc}{_shape_hint(str(exc))}", line=number) from None
        except UnicodeDecodeError:
            raise EventError("invalid UTF-8", line=number) from None
        except RecursionError:  # msgspec's own depth limit on arrays and objects, not Python's stack
            raise EventError("invalid JSON: arrays or objects nested too deeply", line=number) from None
    return events


def _validation_error(message: str, line: int) -> EventError:
    field = None
    match = _FIELD_PATH.search(message)
    if match is not None:
        field = match.group(1) or None
        message = message[: match.start()]
    elif message.startswith("Object missing required field `"):
        field = message.split("`")[1]
    if message.startswith("Expected `object`, got "):  # the line is a JSON value, but no object
        got = message.removeprefix("Expected `object`, got ").strip("`")
        message = f"a line must be one JSON object, not {_JSON_KINDS.get(got, got)}: {NDJSON}"
    return EventError(message.replace(" | null", ""), line=line, field=field)


# The usual ways a body is JSON but not NDJSON get one line that says what is expected (the error
# path only: a good body never comes here).
NDJSON = "the body is NDJSON, one JSON object per line"
_JSON_KINDS = {"array": "an array", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}


def _shape_hint(decode_error: str) -> str:
    if "trailing characters" in decode_error:  # objects run together: newlines lost on the way
        return f": {NDJSON} (`curl -d @file` strips newlines: send the file with `--data-binary @file`)"
    if "truncated" in decode_error:  # a line ends inside a value: JSON spread over lines
        return f": {NDJSON}, not pretty-printed over several lines"
    return ""


def _restore_negative_zero(body: bytes | bytearray, events: list[Event], credits: list[float | None]) -> None:
    # Line by line, with the same notion of a blank line as the decoder, so indices stay aligned.
    lines = (line for line in body.split(b"\n") if line.strip())
    for i, line in enumerate(lines):
        if credits[i] == 0.0 and bytes(_CREDITS.decode(line).credits).strip() == b"-0":
            events[i].credits = credits[i] = -0.0


def line_of(body: bytes | bytearray, index: int) -> int:
    """1-based line number of the index-th non-blank line."""
    seen = -1
    for number, text in enumerate(bytes(body).split(b"\n"), start=1):  # a copy: only for an error's answer
        if text.strip():
            seen += 1
            if seen == index:
                return number
    raise IndexError(index)


def _check_line_lengths(body: bytes | bytearray, max_line: int) -> None:
    start = 0
    number = 1
    while start < len(body):
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        if end - start > max_line:
            raise EventError(f"line longer than the limit of {max_line} bytes", line=number, status=413)
        start = end + 1
        number += 1
