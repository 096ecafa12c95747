"""Renderers: Go float and time formatting, Go encoding/csv quoting (properties and edge cases)."""

from __future__ import annotations

import csv
import io
import math
import struct
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from batched_event_api.events import timestamps
from batched_event_api.events.decode import Decoded, Event
from batched_event_api.events.render import (
    GO_SPACE,
    csv_record,
    go_float,
    needs_quotes,
    render_rows,
)


def _same_float(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e21)
@example(5e-324)
@example(-0.0)
@example(123456789.123456789)
@example(1.7976931348623157e308)
def test_go_float_round_trips_without_exponent(x):
    text = go_float(x)
    assert "e" not in text and "E" not in text
    assert _same_float(float(text), x)
    assert not text.endswith(".0") and not text.endswith(".")
    # Same digits as the shortest round-trip representation (an independent oracle: Decimal).
    oracle = f"{Decimal(repr(x)):f}"
    if "." in oracle:
        oracle = oracle.rstrip("0").rstrip(".")
    assert text == oracle


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e21, "1000000000000000000000"),
        (-0.0, "-0"),
        (5.0, "5"),
        (0.1, "0.1"),
        (1e-7, "0.0000001"),
        (123456789.123456789, "123456789.12345679"),
        (5e-324, "0." + "0" * 323 + "5"),
    ],
)
def test_go_float_known_values(value, text):
    assert go_float(value) == text


def _iso(d: datetime) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59) | st.just(0)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(0, 999_999_999),
    offsets,
    st.integers(0, 3),
)
def test_time_parse_matches_calendar_and_renders_like_go(local, nanos, offset_minutes, extra_zeros):
    local = local.replace(microsecond=0)
    sign = "-" if offset_minutes < 0 else "+"
    zone = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    if offset_minutes == 0 and extra_zeros % 2:
        zone = "Z"  # the fast path
    fraction = f"{nanos:09d}" + "0" * extra_zeros
    text = _iso(local) + "." + fraction + zone
    ns, rendered = timestamps.parse(text)
    utc = local - timedelta(minutes=offset_minutes)
    epoch = datetime(1970, 1, 1)
    expected_ns = ((utc - epoch) // timedelta(seconds=1)) * 1_000_000_000 + nanos
    assert ns == expected_ns
    digits = f"{nanos:09d}".rstrip("0")
    want_zone = "Z" if offset_minutes == 0 else zone
    assert rendered == _iso(local) + ("." + digits if digits else "") + want_zone
    # Rendering is a fixed point: parsing the output gives the same instant and text.
    assert timestamps.parse(rendered) == (ns, rendered)
    assert timestamps.utc_stamp(ns) == _iso(utc).replace("-", "").replace(":", "").replace("T", "-")


@given(st.integers(-(10**9), 10**9))
def test_civil_days_round_trip(days):
    assert timestamps.days_from_civil(*timestamps.civil_from_days(days)) == days


@pytest.mark.parametrize(
    "text",
    [
        "2024-07-01T02:03:04",
        "2024-07-01t02:03:04Z",
        "2024-07-01T02:03:04z",
        "2024-07-01T02:03:04.Z",
        "2024-07-01T02:03:04+24:00",
        "2024-07-01T02:03:04+05:60",
        "2024-07-01T02:03:04+0530",
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-07-01T02:03:04,5Z",
        "２０２４-07-01T02:03:04Z",
        " 2024-07-01T02:03:04Z",
        "",
    ],
)
def test_time_rejects_non_rfc3339(text):
    with pytest.raises(timestamps.TimeFormatError):
        timestamps.parse(text)


def test_time_keeps_nanoseconds_and_offset():
    assert timestamps.parse("2024-07-01T02:03:04.123456789+05:30")[1] == "2024-07-01T02:03:04.123456789+05:30"
    assert timestamps.parse("2024-07-01T02:03:04.1234567891-00:00")[1] == "2024-07-01T02:03:04.123456789Z"
    assert timestamps.parse("2024-02-29T23:59:59.000000001+00:00")[1] == "2024-02-29T23:59:59.000000001Z"


fields = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["", "\\.", " a", "\u00a0x", "\u2028", '"', ",", "\r\n", "\x1c", "\u200b", 'a"b']
)


@given(st.lists(fields, min_size=1, max_size=6))
def test_csv_record_reads_back_to_the_same_fields(values):
    line = csv_record(values)
    assert line.endswith("\n")
    parsed = next(csv.reader(io.StringIO(line, newline=""), strict=True))
    if values == [""]:
        assert parsed == []  # Python's reader cannot tell one empty field from an empty line
    else:
        assert parsed == values


@given(fields)
def test_quoting_rule_is_gos(value):
    quoted = csv_record([value]).startswith('"')
    go_rule = value != "" and (value == "\\." or any(c in value for c in ',"\r\n') or value[0] in GO_SPACE)
    assert quoted == go_rule == needs_quotes(value)


def test_python_isspace_is_not_gos():
    assert "\x1c".isspace() and not needs_quotes("\x1c")
    assert needs_quotes("\u3000x") and needs_quotes("\x85") and not needs_quotes("\u200b")


credit_values = st.none() | st.sampled_from([0.0, -0.0, 1e21, 100.0]) | st.floats(allow_nan=False, allow_infinity=False)


@given(
    st.lists(
        st.tuples(
            fields, fields, st.integers(-(2**63), 2**63 - 1) | st.none(), st.booleans() | st.none(), credit_values
        ),
        max_size=40,
    )
)
def test_batch_rendering_equals_field_by_field_rendering(items):
    # The rows of a batch, against csv_record field by field per event.
    events = [Event(time="t", uuid=u, email=e, id=i, active=a, description=u, credits=c) for u, e, i, a, c in items]
    times = ["2024-07-01T02:03:04Z"] * len(events)
    rows = render_rows(Decoded(events, [0] * len(events), times, [e.credits for e in events]))
    expected = [
        csv_record(
            [
                t,
                e.uuid,
                str(e.id or 0),
                "true" if e.active else "false",
                e.email,
                "",
                e.description,
                go_float(0.0 if e.credits is None else e.credits),
            ]
        )[:-1]
        for e, t in zip(events, times)
    ]
    assert rows == expected


def test_missing_fields_render_as_zero_values():
    assert render_rows(Decoded([Event(time="x")], [0], ["2024-07-01T02:03:04Z"], [None])) == [
        "2024-07-01T02:03:04Z,,0,false,,,,0"
    ]
    nulls = Event(time="x", uuid=None, id=None, active=None, email=None, phone=None, description=None, credits=None)
    assert render_rows(Decoded([nulls], [0], ["2024-07-01T02:03:04Z"], [None])) == [
        "2024-07-01T02:03:04Z,,0,false,,,,0"
    ]
    assert math.copysign(1, float(go_float(-0.0))) == -1


@given(
    st.lists(
        st.sampled_from(
            [
                "2024-07-01T02:03:04Z",
                "2024-07-01T02:03:04.120Z",
                "2024-07-01T02:03:04.1Z",
                "2024-02-29T23:59:59.999999999Z",
                "2023-02-29T00:00:00Z",
                "1600-01-01T00:00:00Z",
                "2024-07-01T02:03:04+05:30",
                "2024-07-01T02:03:04.1234567891Z",
                "2024-07-01T24:00:00Z",
                "2024-07-01T02:03:04.Z",
                "ž024-07-01T02:03:04Z",
                "2024-07-01T02:03:04.000000000Z",
            ]
        )
        | st.text(max_size=32),
        min_size=0,
        max_size=80,
    )
)
def test_batch_time_parsing_equals_one_by_one(texts):
    expected_ns, expected_texts, error_at = [], [], None
    for i, text in enumerate(texts):
        try:
            ns, rendered = timestamps.parse(text)
        except timestamps.TimeFormatError:
            error_at = i
            break
        expected_ns.append(ns)
        expected_texts.append(rendered)
    if error_at is None:
        assert timestamps.parse_many(texts) == (expected_ns, expected_texts)
    else:
        with pytest.raises(timestamps.TimeFormatError) as info:
            timestamps.parse_many(texts)
        assert info.value.index == error_at
