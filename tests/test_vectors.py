"""Every rendering vector of the reference's Go standard library, checked one by one."""

from __future__ import annotations

import json

import pytest

from batched_event_api.events import timestamps
from batched_event_api.events.decode import decode
from batched_event_api.events.render import csv_record, go_float
from paths import GOLDEN

VECTORS = GOLDEN / "vectors"


def _rows(name: str) -> list[list[str]]:
    lines = (VECTORS / name).read_text(encoding="utf-8").split("\n")
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def test_credits_vectors():
    rows = _rows("credits.tsv")
    assert len(rows) == 19_036
    # Decoded the way a request is (msgspec, with the -0 literal fix-up), then rendered.
    body = "".join('{"time":"2024-07-01T00:00:00Z","credits":%s}\n' % literal for literal, _ in rows).encode()
    events = decode(body, max_line=1 << 20).events
    wrong = [(lit, want, go_float(e.credits)) for (lit, want), e in zip(rows, events) if go_float(e.credits) != want]
    assert wrong == []


def test_time_vectors():
    rows = _rows("times.tsv")
    assert len(rows) == 6_021
    wrong = []
    for row in rows:
        text = json.loads(row[0])
        if row[1] == "error":
            with pytest.raises(timestamps.TimeFormatError):
                timestamps.parse(text)
            continue
        ns, rendered = timestamps.parse(text)
        if (rendered, timestamps.utc_stamp(ns)) != (row[1], row[2]):
            wrong.append((text, row[1:], rendered, timestamps.utc_stamp(ns)))
    assert wrong == []


def test_csv_vectors():
    rows = _rows("csv.tsv")
    assert len(rows) == 4_013
    wrong = []
    for fields_json, line_json in rows:
        fields, want = json.loads(fields_json), json.loads(line_json)
        if csv_record(fields) != want:
            wrong.append((fields, want, csv_record(fields)))
    assert wrong == []
