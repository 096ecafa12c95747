"""The native pass (`_native.c`) against the Python path: the same rows and times for every body,
the same error for a bad one, and which lines it takes.

The Python path is itself checked against every reference vector (test_vectors.py), and the native
pass against them again here, so a difference shows up twice.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batched_event_api.errors import EventError
from batched_event_api.events import timestamps

try:  # built, whether BEA_NATIVE switches it off or not
    from batched_event_api.events import _native
except ImportError:
    _native = None
from batched_event_api.events.render import csv_line, go_float
from batched_event_api.events.transcode import transcode as transcode_body
from paths import GOLDEN, SEED

LIMIT = 1 << 20


def test_the_native_pass_is_built():
    # setup.py builds it at install time with the machine's C compiler; without one the service
    # runs on the Python path alone (same bytes, a few times slower), which this test reports.
    assert _native is not None, "batched_event_api.events._native is not built: is a C compiler installed?"


def transcode(body: bytes) -> tuple[list[str], list[int], int]:
    csv, times, ends, stop = _native.transcode(body, LIMIT)
    data, starts = bytes(csv), [0, *memoryview(ends).cast("q")]
    rows = [data[a : b - 1].decode() for a, b in zip(starts, starts[1:])]  # without their newline
    return rows, list(memoryview(times).cast("q")), stop


def outcome(body: bytes, native: bool) -> tuple:
    try:
        prepared = transcode_body(body, LIMIT, native=native, slice_size=256)
    except EventError as exc:
        return ("error", exc.status, exc.line, exc.field, exc.message)
    return ("rows", prepared.rows.text(), [int(t) for t in prepared.times])


def same_as_python(body: bytes) -> None:
    assert outcome(body, native=True) == outcome(body, native=False)


# -- whole bodies ------------------------------------------------------------------------------


def test_seed_datasets_are_taken_whole_and_match():
    for path in sorted(SEED.glob("initial-dataset-*.ndjson")):  # the sample datasets, not the typo example
        body = path.read_bytes()
        rows, times, stop = transcode(body)
        assert stop == len(body) and len(rows) == body.count(b"\n")
        same_as_python(body)


def test_tricky_golden_requests_match():
    requests = sorted((GOLDEN / "tricky" / "requests").iterdir())
    assert requests
    for path in requests:
        same_as_python(path.read_bytes())


def test_a_line_it_leaves_goes_to_the_python_path_and_it_carries_on():
    plain = '{"time":"2024-07-01T02:03:04Z","id":1}\n'
    odd = '{"time":"2024-07-01T02:03:05Z","id":2,"extra":{"nested":[1]}}\n'  # nested: not native
    body = (plain * 3 + odd + plain * 200).encode()
    rows, _, stop = transcode(body)
    assert stop == 3 * len(plain) and len(rows) == 3
    same_as_python(body)
    bad = (plain * 100 + '{"time":"2024-07-01T02:03:05Z","id":"x"}\n' + plain).encode()
    assert outcome(bad, native=True)[:4] == ("error", 400, 101, "id")
    same_as_python(bad)


# -- generated lines ---------------------------------------------------------------------------

times = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(1650, 2300),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", "."]) | st.from_regex(r"\.[0-9]{1,12}", fullmatch=True),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-12:00", "+23:59", "+24:00", "+05:60", "", "+0530"]),
)
texts = st.text() | st.sampled_from(["", " x", "\\.", "a,b", 'say "hi"', "\u3000x", "\u2028", "\x1cfs", "é"])
floats = st.floats(allow_nan=False, allow_infinity=False)
credits = st.one_of(
    floats.map(repr),
    floats.map(lambda x: "%.17g" % x),
    st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["-0", "-0.0", "0e5", "1e400", "5e-324", "2.2250738585072014e-308", "1E21"]),
).filter(lambda text: "inf" not in text and "nan" not in text)
scalars = st.none() | st.booleans() | st.integers() | floats | st.text(max_size=5)
values = {
    "time": times | texts | st.none() | st.integers(),
    "uuid": texts | st.none() | st.integers(),
    "id": st.integers(-(2**63) - 2, 2**63 + 1) | st.none() | floats | st.text(max_size=3),
    "active": st.booleans() | st.none() | st.integers(0, 1),
    "email": texts | st.none(),
    "phone": texts | st.none(),
    "description": texts | st.none(),
    "credits": credits | st.none() | st.text(max_size=3),
}


@st.composite
def lines(draw) -> str:
    fields = draw(st.permutations(list(values)))
    fields = [f for f in fields if f == "time" or draw(st.booleans())]
    if draw(st.booleans()):
        fields.append(draw(st.sampled_from(["extra", "Time", "ID", "tags"])))
    parts = []
    for name in fields:
        if name == "credits":
            value = draw(credits | st.sampled_from(["null", '"1"']))
        else:
            value = json.dumps(draw(values.get(name, scalars)), ensure_ascii=draw(st.booleans()))
        gap = draw(st.sampled_from(["", " ", "\t", " \r "]))
        parts.append(f'{gap}"{name}"{gap}:{gap}{value}{gap}')
    return "{" + ",".join(parts) + "}" + draw(st.sampled_from(["", " ", "\r"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(lines(), max_size=12), st.sampled_from(["\n", "\r\n", "\n\n", "\n \n"]))
def test_generated_bodies_match_the_python_path(body_lines, separator):
    same_as_python(separator.join(body_lines).encode())


@settings(max_examples=2000, deadline=None)
@given(floats, st.sampled_from([repr, lambda x: "%.17g" % x, lambda x: "%.16g" % x, json.dumps]))
def test_credits_render_as_go_does(x, literal_of):
    literal = literal_of(x)
    value = float(literal)  # "%.16g" of a float near the largest one can overflow
    body = ('{"time":"2024-07-01T00:00:00Z","credits":%s}' % literal).encode()
    rows, _, stop = transcode(body)
    if stop == 0:
        assert left_to_python(value)
        return
    assert rows[0].rsplit(",", 1)[1] == go_float(value)


# -- every reference vector ----------------------------------------------------------------------


def _vectors(name: str) -> list[list[str]]:
    lines = (GOLDEN / "vectors" / name).read_text(encoding="utf-8").split("\n")
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def left_to_python(value: float) -> bool:
    """The floats the native pass leaves: beyond the range, subnormal, or a power of two."""
    return not math.isfinite(value) or abs(value) < sys.float_info.min or math.frexp(value)[0] in (0.5, -0.5)


def test_credits_vectors_natively():
    for literal, want in _vectors("credits.tsv"):
        rows, _, stop = transcode(('{"time":"2024-07-01T00:00:00Z","credits":%s}' % literal).encode())
        if stop:
            assert rows[0].rsplit(",", 1)[1] == want, literal
        else:
            assert left_to_python(float(literal)), literal


def test_time_vectors_natively():
    taken = 0
    for row in _vectors("times.tsv"):
        body = ('{"time":%s}' % row[0]).encode()
        rows, ns, stop = transcode(body)
        if row[1] == "error":
            assert stop == 0, row  # never accepted: the Python path answers 400
            continue
        if stop:
            assert (rows[0].split(",")[0], timestamps.utc_stamp(ns[0])) == (row[1], row[2])
            taken += 1
    assert taken >= 5_000  # all but years outside 1700..2200


def test_csv_vectors_natively():
    taken = 0
    for fields_json, _ in _vectors("csv.tsv"):
        fields = json.loads(fields_json)
        for i in range(0, len(fields), 4):
            uuid, email, phone, description = (fields[i : i + 4] + ["", "", ""])[:4]
            line = json.dumps(
                {
                    "time": "2024-07-01T00:00:00Z",
                    "uuid": uuid,
                    "email": email,
                    "phone": phone,
                    "description": description,
                }
            )
            rows, _, stop = transcode(line.encode())
            if stop:  # lone surrogates are left to the Python path
                assert rows[0] == csv_line(["2024-07-01T00:00:00Z", uuid, "0", "false", email, phone, description, "0"])
                taken += 1
    assert taken >= 3_000


@pytest.mark.parametrize("limit", [10, 60])
def test_a_line_over_the_limit_is_left_to_the_python_path(limit):
    line = b'{"time":"2024-07-01T00:00:00Z","uuid":"0123456789"}'
    *_, stop = _native.transcode(b"\n" + line, limit)
    assert stop == (1 if len(line) > limit else len(line) + 1)


# -- issue 19: the accepted time range --------------------------------------------------------


def test_the_native_pass_has_the_accepted_time_range_of_the_python_path():
    assert (_native.EARLIEST_NS, _native.LATEST_NS) == (timestamps.EARLIEST_NS, timestamps.LATEST_NS)


@pytest.mark.parametrize(
    "when",
    [
        "2900-01-01T00:00:00Z",
        "1600-01-01T00:00:00Z",
        "2262-01-01T00:00:00Z",
        "1678-01-01T00:00:00Z",
        "2261-12-31T23:59:59.999999999Z",
        "1677-12-31T23:59:59.999999999Z",
        "1678-01-01T00:30:00+01:00",
        "2261-12-31T23:30:00-01:00",
        "2200-12-31T23:59:59-23:59",
        "1700-01-01T00:00:00+23:59",
    ],
)
def test_times_at_and_past_the_edges_of_the_range_match_the_python_path(when):
    plain = '{"time":"2024-07-01T02:03:04Z","id":1}\n'
    body = (plain * 3 + '{"time":"%s","id":2}\n' % when + plain).encode()
    same_as_python(body)
    rows, times, stop = transcode(body)
    assert all(timestamps.EARLIEST_NS <= t < timestamps.LATEST_NS for t in times)


@settings(max_examples=200, deadline=None)
@given(st.lists(lines(), max_size=12), st.booleans())
def test_every_time_either_path_hands_on_is_in_the_accepted_range(body_lines, native):
    try:
        prepared = transcode_body("\n".join(body_lines).encode(), LIMIT, native=native, slice_size=64)
    except EventError:
        return
    assert all(timestamps.EARLIEST_NS <= t < timestamps.LATEST_NS for t in prepared.times)
