"""Decoding and validation of NDJSON bodies: accepted quirks, and precise errors with line numbers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batched_event_api.errors import EventError
from batched_event_api.events.decode import decode

T = '"time":"2024-07-01T02:03:04Z"'
LIMIT = 1 << 20


def ok(body: bytes) -> list:
    return decode(body, max_line=LIMIT).events


def err(body: bytes) -> EventError:
    with pytest.raises(EventError) as info:
        decode(body, max_line=LIMIT)
    return info.value


def test_quirks_are_accepted():
    line = ("{%s}" % T).encode()
    assert ok(b"") == [] and ok(b"\n\n") == [] and ok(b"  \r\n") == []
    assert len(ok(line)) == 1  # no final newline
    assert len(ok(line + b"\r\n" + line + b"\r\n")) == 2
    assert len(ok(b"\n" + line + b"\n \t \n\n" + line + b"\n\n")) == 2
    assert ok(('{%s,"Time":"x","extra":[1,{"a":null}]}' % T).encode())[0].time == "2024-07-01T02:03:04Z"


def test_long_line_is_accepted():
    line = ('{%s,"description":"%s"}\n' % (T, "x" * (1 << 20))).encode()
    events = decode(line, max_line=2 << 20).events
    assert len(events[0].description) == 1 << 20


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{%s,"id":"5"}' % T, "id"),
        ('{%s,"id":1.5}' % T, "id"),
        ('{%s,"id":9223372036854775808}' % T, "id"),
        ('{%s,"id":-9223372036854775809}' % T, "id"),
        ('{%s,"active":"true"}' % T, "active"),
        ('{%s,"credits":1e400}' % T, "credits"),
        ('{%s,"credits":"1"}' % T, "credits"),
        ('{%s,"email":5}' % T, "email"),
        ('{"uuid":"u"}', "time"),
        ('{"time":null}', "time"),
        ('{"time":"2024-07-01T02:03:04"}', "time"),
        ('{"time":"yesterday"}', "time"),
        ('{"time":5}', "time"),
        ("[1,2]", None),
        ("5", None),
        ('"event"', None),
        ("{", None),
        ('{%s} {"a":1}' % T, None),
        ("{%s},{%s}" % (T, T), None),
        ("NaN", None),
    ],
)
def test_bad_line_names_line_and_field(line, field):
    good = "{%s}\n" % T
    body = (good + "\n" + good + line + "\n" + good).encode()
    error = err(body)
    assert (error.line, error.field, error.status) == (4, field, 400)
    assert error.message


def test_object_spanning_lines_is_rejected():
    error = err(('{%s,\n"id":1}\n' % T).encode())
    assert error.line == 1


def test_invalid_utf8_anywhere_is_rejected_with_its_line():
    good = ("{%s}\n" % T).encode()
    assert err(good + b'{"time":"2024-07-01T02:03:04Z","x":"\xff"}\n').line == 2
    assert err(good + good + b'{"time":"\xc3\x28"}').line == 3


def test_line_over_the_limit_is_413_with_its_line():
    good = ("{%s}\n" % T).encode()
    with pytest.raises(EventError) as info:
        decode(good + b'{"time":"' + b"1" * 100 + b'"}\n', max_line=80)
    assert (info.value.status, info.value.line) == (413, 2)


def test_negative_zero_credits_keep_their_sign():
    events = ok(('{%s,"credits":-0}\n{%s,"credits": -0 }\n{%s,"credits":0}\n' % (T, T, T)).encode())
    assert [str(e.credits) for e in events] == ["-0.0", "-0.0", "0.0"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
near_events = st.fixed_dictionaries(
    {"time": st.sampled_from(["2024-07-01T02:03:04Z", "2024-07-01T02:03:04.5+05:30", "bad", "", None]) | st.text()},
    optional={k: json_values for k in ("uuid", "id", "active", "email", "phone", "description", "credits")},
)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_events_or_a_line_error(body):
    try:
        decode(body, max_line=LIMIT)
    except EventError as e:
        assert e.status == 400 and 1 <= e.line <= body.count(b"\n") + 1


@given(st.lists(near_events | json_values, max_size=6))
def test_near_valid_events_give_events_or_a_line_error(objects):
    body = "".join(json.dumps(o) + "\n" for o in objects).encode()
    try:
        events = decode(body, max_line=LIMIT).events
    except EventError as e:
        assert 1 <= e.line <= len(objects)
        assert e.message
    else:
        assert len(events) == len(objects)


@pytest.mark.parametrize("native", [False, True])
def test_large_bodies_are_decoded_in_slices_with_true_line_numbers(native):
    from batched_event_api.events.transcode import transcode

    lines = ['{"time":"2024-07-01T02:03:%02dZ","id":%d}\n' % (i % 60, i) for i in range(500)]
    body = "".join(lines).encode()
    whole = transcode(body, LIMIT, native=native)
    sliced = transcode(body, LIMIT, slice_size=100, native=native)
    assert sliced.rows.text() == whole.rows.text() and list(sliced.times) == list(whole.times)
    assert len(whole) == 500
    bad = "".join(lines[:377] + ['{"time":"2024-07-01T02:03:04Z","id":"x"}\n'] + lines[377:]).encode()
    with pytest.raises(EventError) as info:
        transcode(bad, LIMIT, slice_size=100, native=native)
    assert (info.value.line, info.value.field) == (378, "id")


def test_negative_zero_with_lines_only_python_calls_blank():
    # A vertical tab alone on a line is blank to the line splitter but not JSON whitespace.
    events = ok(('{%s,"credits":-0}\n\x0b\n{%s,"credits":0}\n' % (T, T)).encode())
    assert [str(e.credits) for e in events] == ["-0.0", "0.0"]


@given(st.lists(near_events | json_values, max_size=40), st.sampled_from(["\n", "\r\n", "\n\x0b\n", "\n \n"]))
def test_whole_pipeline_gives_rows_or_a_line_error(objects, separator):
    from batched_event_api.events.transcode import transcode

    body = separator.join(json.dumps(o) for o in objects).encode()
    try:
        prepared = transcode(body, LIMIT)
    except EventError as e:
        assert e.status == 400 and 1 <= e.line <= body.count(b"\n") + 1
    else:
        assert len(prepared.times) == len(prepared) == len(objects)


# -- issue 19: times the service cannot window, deep nesting -----------------------------------


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize(
    "when",
    [
        "2900-01-01T00:00:00Z",
        "1600-01-01T00:00:00Z",
        "2262-01-01T00:00:00Z",
        "1677-12-31T23:59:59.999999999Z",
        "1678-01-01T00:00:00+00:01",
        "2261-12-31T23:00:00-01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ],
)
def test_a_time_outside_the_accepted_range_names_its_line_and_field(native, when):
    from batched_event_api.events.transcode import transcode

    body = ('{%s}\n\n{"time":"%s"}\n{%s}\n' % (T, when, T)).encode()
    with pytest.raises(EventError) as info:
        transcode(body, LIMIT, native=native, slice_size=16)
    assert (info.value.status, info.value.line, info.value.field) == (400, 3, "time")
    assert "1678-01-01T00:00:00Z" in info.value.message and "2262-01-01T00:00:00Z" in info.value.message


@pytest.mark.parametrize("native", [False, True])
def test_the_edges_of_the_accepted_range_are_accepted(native):
    from batched_event_api.events import timestamps
    from batched_event_api.events.transcode import transcode

    body = b'{"time":"1678-01-01T00:00:00Z"}\n{"time":"2261-12-31T23:59:59.999999999Z"}\n{"time":"2262-01-01T00:59:59+01:00"}\n'
    times = list(transcode(body, LIMIT, native=native).times)
    assert times == [timestamps.EARLIEST_NS, timestamps.LATEST_NS - 1, timestamps.LATEST_NS - 10**9]


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize(
    "nested", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000]
)
def test_deeply_nested_json_is_a_400_naming_the_line(native, nested):
    from batched_event_api.events.transcode import transcode

    body = ('{%s}\n{%s,"extra":%s}\n' % (T, T, nested)).encode()
    with pytest.raises(EventError) as info:
        transcode(body, LIMIT, native=native)
    assert (info.value.status, info.value.line) == (400, 2) and "nested" in info.value.message
    assert len(transcode(('{%s,"extra":%s}\n' % (T, "[" * 64 + "]" * 64)).encode(), LIMIT, native=native)) == 1


# The usual ways a body is JSON but not NDJSON, and what the one-line answer must say.
MISTAKES = {
    "a JSON array": ("[{%s},{%s}]\n" % (T, T), "not an array: the body is NDJSON, one JSON object per line"),
    "a pretty-printed object": (
        '{\n  %s,\n  "id": 1\n}\n' % T,
        "the body is NDJSON, one JSON object per line, not pretty-printed",
    ),
    "curl -d (newlines stripped)": (
        "{%s}{%s}{%s}" % (T, T, T),
        "the body is NDJSON, one JSON object per line (`curl -d @file` strips newlines: send the file with `--data-binary @file`)",
    ),
}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_body_that_is_not_ndjson_says_what_is_expected(native, mistake):
    from batched_event_api.events.transcode import transcode

    body, says = MISTAKES[mistake]
    with pytest.raises(EventError) as info:
        transcode(body.encode(), LIMIT, native=native)
    assert (info.value.status, info.value.line) == (400, 1)
    assert says in info.value.message and "\n" not in info.value.message
