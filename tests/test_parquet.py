"""A window's CSV, rendered by the real renderer, converted to Parquet (output/parquet.py): pyarrow,
DuckDB, Polars and pandas, given nothing but the path, read back every value the CSV row holds (the
instant to the nanosecond, the event's own offset, strings byte for byte, float bits); the schema's
types; bounded row groups; each compression; the same bytes for the same CSV; a malformed CSV raises
and leaves nothing written."""

from __future__ import annotations

import io
import json
import math
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batched_event_api.events import timestamps
from batched_event_api.events.render import csv_line, go_float
from batched_event_api.events.transcode import transcode
from batched_event_api.output import parquet
from batched_event_api.output.parquet import HEADER, ConversionError, Converted, convert
from model import FLOATS, IDS, STRINGS, generate_events, ndjson
from test_readers import EDGE_TIMES, HOSTILE

NAMES = ["time", "time_offset_minutes", "uuid", "id", "active", "email", "phone", "description", "credits"]
MAX_LINE = 64 * 1024**2


def window_csv(events: list[dict], header: bool = False) -> bytes:
    """The window's file as the writer renders it."""
    batch = transcode(ndjson(events), MAX_LINE)
    return (HEADER if header else b"") + b"".join(batch.rows.chunks(0, len(batch)))


def float_bits(x: float) -> bytes:
    return struct.pack("<d", x)  # tells -0.0 from 0.0


def offset_minutes(rendered: str) -> int:
    """The UTC offset of the writer's time text (it writes `Z` for every zero offset)."""
    if rendered.endswith("Z"):
        return 0
    minutes = int(rendered[-5:-3]) * 60 + int(rendered[-2:])
    return -minutes if rendered[-6] == "-" else minutes


def expected_row(e: dict) -> tuple:
    ns, rendered = timestamps.parse(e["time"])
    credits = e.get("credits")
    return (
        ns,
        offset_minutes(rendered),
        e.get("uuid") or "",
        e.get("id") or 0,
        bool(e.get("active")),
        e.get("email") or "",
        e.get("phone") or "",
        e.get("description") or "",
        float_bits(0.0 if credits is None else float(credits)),
    )


def rows_of(table: pa.Table) -> list[tuple]:
    """A reader's table as rows like expected_row's, once its column names and types are checked."""
    assert table.column_names == NAMES
    time_type = table.schema.field("time").type
    assert pa.types.is_timestamp(time_type) and time_type.unit == "ns" and time_type.tz in ("UTC", "Etc/UTC")
    types = [table.schema.field(c).type for c in ("time_offset_minutes", "id", "active", "credits")]
    assert types == [pa.int16(), pa.int64(), pa.bool_(), pa.float64()]
    columns = {name: table.column(name) for name in NAMES}
    columns["time"] = columns["time"].cast(pa.int64())
    for name in ("uuid", "email", "phone", "description"):
        columns[name] = columns[name].cast(pa.string())
    values = {name: column.to_pylist() for name, column in columns.items()}
    values["credits"] = [float_bits(x) for x in values["credits"]]
    return list(zip(*(values[name] for name in NAMES)))


READERS = {
    "pyarrow": lambda path: pq.read_table(path),
    "duckdb": lambda path: duckdb.read_parquet(str(path)).to_arrow_table(),
    "polars": lambda path: pl.read_parquet(path).to_arrow(),
    "pandas": lambda path: pa.Table.from_pandas(pd.read_parquet(path), preserve_index=False),
}


def converted_file(directory: Path, csv: bytes, **options) -> tuple[Path, Converted]:
    path = directory / "window.parquet"
    with path.open("wb") as destination:
        result = convert(io.BytesIO(csv), destination, **{"header": False, "compression": "zstd", **options})
    return path, result


def assert_every_reader_reads(path: Path, events: list[dict]) -> None:
    expected = [expected_row(e) for e in events]
    for name, read in READERS.items():
        assert rows_of(read(path)) == expected, name


# Events the server takes, drawn by hypothesis: any text (no lone surrogates: JSON cannot carry
# them as UTF-8), any int64 and finite float, times over the whole accepted range in any offset
# with 0 to 12 fraction digits.
texts = st.one_of(st.sampled_from(STRINGS + HOSTILE), st.text(st.characters(exclude_categories=["Cs"]), max_size=40))


def time_text(ns: int, offset: int, digits: int, zero_zone: str = "Z") -> str:
    """An RFC 3339 text of the instant in the offset (minutes), with `digits` fraction digits."""
    zone = zero_zone if offset == 0 else "%s%02d:%02d" % ("+-"[offset < 0], abs(offset) // 60, abs(offset) % 60)
    seconds, nanos = divmod(ns + offset * 60 * 10**9, 10**9)
    days, rest = divmod(seconds, 86400)
    y, m, d = timestamps.civil_from_days(days)
    fraction = "." + f"{nanos:09d}000"[:digits] if digits else ""
    return f"{y:04d}-{m:02d}-{d:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}{fraction}{zone}"


INSTANTS = (timestamps.EARLIEST_NS + 10**9, timestamps.LATEST_NS - 10**9)  # a truncated fraction stays in range
time_texts = st.builds(
    time_text,
    st.integers(*INSTANTS),
    st.sampled_from([0, 0, 330, -210, 1439, -1439]) | st.integers(-1439, 1439),
    st.integers(0, 12),
    st.sampled_from(["Z", "+00:00", "-00:00"]),
)


events_strategy = st.fixed_dictionaries(
    {"time": time_texts},
    optional={
        "uuid": texts | st.none(),
        "email": texts,
        "phone": texts,
        "description": texts,
        "id": st.sampled_from(IDS) | st.integers(-(2**63), 2**63 - 1) | st.none(),
        "active": st.booleans() | st.none(),
        "credits": st.sampled_from(FLOATS) | st.floats(allow_nan=False, allow_infinity=False) | st.none(),
    },
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(events_strategy, min_size=1, max_size=40),
    header=st.booleans(),
    compression=st.sampled_from(parquet.COMPRESSIONS),
)
def test_every_reader_reads_each_value_the_csv_holds(events, header, compression):
    with tempfile.TemporaryDirectory() as directory:
        csv = window_csv(events, header)
        path, result = converted_file(Path(directory), csv, header=header, compression=compression)
        assert result == Converted(len(events), len(csv), path.stat().st_size)
        assert_every_reader_reads(path, events)


def test_floats_of_every_magnitude_keep_their_bits(tmp_path):
    """Arrow's float parser on Go's shortest 'f' text (up to 327 digits for a subnormal): 60,000
    random bit patterns, a third of them subnormal, come back as the same bits."""
    rng = random.Random(9)
    patterns = [rng.getrandbits(64) for _ in range(40_000)] + [
        rng.getrandbits(52) | rng.getrandbits(1) << 63 for _ in range(20_000)
    ]
    floats = [struct.unpack("<d", struct.pack("<Q", bits))[0] for bits in patterns]
    floats = [x for x in floats if math.isfinite(x)]
    csv = "".join(csv_line(["2024-07-01T02:03:04Z", "", "0", "false", "", "", "", go_float(x)]) + "\n" for x in floats)
    path, _ = converted_file(tmp_path, csv.encode())
    assert [float_bits(x) for x in pq.read_table(path).column("credits").to_pylist()] == list(map(float_bits, floats))


def test_times_over_the_whole_range_keep_their_instant_and_offset(tmp_path):
    """Arrow's ISO 8601 parser, with an offset, to the nanosecond: 50,000 random times."""
    rng = random.Random(10)
    parsed = [
        timestamps.parse(time_text(rng.randrange(*INSTANTS), rng.randrange(-1439, 1440), rng.randrange(13)))
        for _ in range(50_000)
    ]
    csv = "".join(csv_line([rendered, "", "0", "false", "", "", "", "0"]) + "\n" for _, rendered in parsed)
    path, _ = converted_file(tmp_path, csv.encode())
    table = pq.read_table(path)
    assert table.column("time").cast(pa.int64()).to_pylist() == [ns for ns, _ in parsed]
    assert table.column("time_offset_minutes").to_pylist() == [offset_minutes(rendered) for _, rendered in parsed]


def tricky_window(rng: random.Random) -> list[dict]:
    """The model's tricky events, hostile strings and the accepted range's edges, and long rows
    whose values hold quotes, commas and newlines."""
    events = generate_events(rng, 2000)
    for i, e in enumerate(events):
        if i % 3 == 0:
            e[rng.choice(["uuid", "email", "phone", "description"])] = rng.choice(HOSTILE)
    events += [{"time": t, "uuid": s, "description": "edge"} for t, s in zip(EDGE_TIMES, HOSTILE)]
    for i in range(50):  # 0-9 fraction digits, three offsets
        fraction = "." + "123456789"[: i % 10] if i % 10 else ""
        time = f"2030-01-01T00:00:{i:02d}{fraction}{('Z', '+05:45', '-03:30')[i % 3]}"
        events.append({"time": time, "description": 'x\n"y",z\r\n' * rng.randrange(300, 900)})
    rng.shuffle(events)
    return events


def test_model_events_in_several_row_groups_and_pieces(tmp_path, monkeypatch):
    """Rows longer than a piece, pieces cut inside quoted values, row groups far smaller than the
    window: every reader still reads every row, in order."""
    events = tricky_window(random.Random(22))
    csv = window_csv(events)
    monkeypatch.setattr(parquet, "PIECE_BYTES", 4096)  # the long rows are 2.7-8.1 KB
    path, result = converted_file(tmp_path, csv, row_group_bytes=64 * 1024)
    assert result.rows == len(events) and result.csv_bytes == len(csv)
    assert pq.ParquetFile(path).metadata.num_row_groups >= 5
    assert_every_reader_reads(path, events)


def test_schema_is_typed_and_required(tmp_path):
    path, _ = converted_file(tmp_path, window_csv(generate_events(random.Random(1), 10)))
    schema = pq.ParquetFile(path).schema
    assert schema.names == NAMES
    columns = {name: schema.column(i) for i, name in enumerate(NAMES)}
    assert all(c.max_definition_level == 0 for c in columns.values())  # REQUIRED: never null
    time = columns["time"]
    assert time.physical_type == "INT64"
    timestamp = json.loads(time.logical_type.to_json())
    assert (timestamp["Type"], timestamp["isAdjustedToUTC"], timestamp["timeUnit"]) == (
        "Timestamp",
        True,
        "nanoseconds",
    )
    offset = columns["time_offset_minutes"]
    assert offset.physical_type == "INT32"
    assert json.loads(offset.logical_type.to_json()) == {"Type": "Int", "bitWidth": 16, "isSigned": True}
    assert [columns[c].physical_type for c in ("id", "active", "credits")] == ["INT64", "BOOLEAN", "DOUBLE"]
    for name in ("uuid", "email", "phone", "description"):
        assert (columns[name].physical_type, columns[name].logical_type.type) == ("BYTE_ARRAY", "STRING")


@pytest.mark.parametrize(
    "compression, codec", [("zstd", "ZSTD"), ("snappy", "SNAPPY"), ("gzip", "GZIP"), ("none", "UNCOMPRESSED")]
)
def test_each_compression(tmp_path, compression, codec):
    events = generate_events(random.Random(2), 300)
    path, _ = converted_file(tmp_path, window_csv(events), compression=compression)
    metadata = pq.ParquetFile(path).metadata
    assert {metadata.row_group(0).column(i).compression for i in range(len(NAMES))} == {codec}
    assert_every_reader_reads(path, events)


def test_an_unknown_compression_is_refused(tmp_path):
    with pytest.raises(ValueError, match="brotli"):
        converted_file(tmp_path, window_csv(generate_events(random.Random(3), 3)), compression="brotli")


def test_the_same_csv_gives_the_same_bytes(tmp_path):
    csv = window_csv(tricky_window(random.Random(4)))
    outputs = []
    for _ in range(2):
        path, _ = converted_file(tmp_path, csv, row_group_bytes=128 * 1024)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_conversion_starts_at_the_destinations_position(tmp_path):
    """Written after what the destination holds already; the count is the Parquet file's bytes."""
    events = generate_events(random.Random(5), 20)
    destination = io.BytesIO(b"before")
    destination.seek(0, io.SEEK_END)
    result = convert(io.BytesIO(window_csv(events)), destination, header=False, compression="zstd")
    data = destination.getvalue()
    assert data.startswith(b"before") and result.parquet_bytes == len(data) - len(b"before")
    assert data[6:10] == b"PAR1" and data.endswith(b"PAR1")


SECRET = "row-text-never-in-an-error"


def malformed_csvs() -> dict[str, bytes]:
    good = window_csv([{"time": "2024-07-01T02:03:04.5+05:30", "uuid": SECRET}] * 3)
    row = csv_line(["2024-07-01T02:03:04Z", SECRET, "1", "true", "e", "p", "d", "1.5"])
    return {
        "a missing column": good + b"2024-07-01T02:03:04Z,%s,1,true,e,p,1.5\n" % SECRET.encode(),
        "an extra column": good + (row + ",x\n").encode(),
        "an empty line": good + b"\n" + good,
        "no newline at the end": good + row.encode(),
        "an unclosed quote": good + b'2024-07-01T02:03:04Z,"' + SECRET.encode() + b",1,true,e,p,d,1\n",
        "an id that is not a number": good + row.replace(",1,", ",one,").encode() + b"\n",
        "an empty credits field": good + row.removesuffix("1.5").encode() + b"\n",
        "a boolean as the other readers write it": good + row.replace("true", "True").encode() + b"\n",
        "a time without a zone": good + row.replace("04Z", "04").encode() + b"\n",
        "a time with ten fraction digits": good + row.replace("04Z", "04.1234567890Z").encode() + b"\n",
        "a day that does not exist": good + row.replace("07-01", "02-30").encode() + b"\n",
        "invalid UTF-8": good + row.replace(SECRET, "\udcff").encode("utf-8", "surrogateescape") + b"\n",
    }


@pytest.mark.parametrize("name", list(malformed_csvs()))
def test_a_csv_the_writer_would_not_render_raises_and_leaves_nothing(name):
    destination = io.BytesIO(b"kept")
    destination.seek(0, io.SEEK_END)
    with pytest.raises(ConversionError) as raised:
        convert(io.BytesIO(malformed_csvs()[name]), destination, header=False, compression="zstd")
    assert SECRET not in str(raised.value) and raised.value.__cause__ is None  # no event data in the error
    assert destination.getvalue() == b"kept"


def test_a_header_is_required_where_one_is_said_to_be_and_read_as_a_row_where_not(tmp_path):
    csv = window_csv(generate_events(random.Random(6), 5))
    with pytest.raises(ConversionError, match="header"):
        converted_file(tmp_path, csv, header=True)
    with pytest.raises(ConversionError):
        converted_file(tmp_path, HEADER + csv, header=False)  # "time" is not a time


def test_an_empty_window_is_a_parquet_file_without_rows(tmp_path):
    path, result = converted_file(tmp_path, HEADER, header=True)
    assert result.rows == 0 and pq.read_table(path).num_rows == 0


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(texts, min_size=2, max_size=2), min_size=1, max_size=8), data=st.data())
def test_pieces_end_where_rows_end(rows, data):
    """_rows_end finds the end of the last whole row in any prefix of Go-quoted CSV."""
    lines = [(csv_line(fields) + "\n").encode() for fields in rows]
    csv = b"".join(lines)
    cut = data.draw(st.integers(0, len(csv)))
    ends = [0] + [sum(map(len, lines[: i + 1])) for i in range(len(lines))]
    assert parquet._rows_end(csv[:cut]) == max(end for end in ends if end <= cut)


def test_importing_the_module_does_not_load_pyarrow():
    """The server process imports the finish stage: pyarrow is loaded only by a conversion."""
    code = (
        "import sys, batched_event_api.output.parquet; assert not [m for m in sys.modules if m.startswith('pyarrow')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("damage", [b'"', b""])
def test_a_row_that_never_ends_is_scanned_once_not_at_each_piece(monkeypatch, damage):
    """A quote never closed (a damaged window) makes the rest of the file one row: each piece read
    scans only itself, not all that came before (quadratic: minutes of a CPU for 200 MB, at each
    turn of the uploader's retries). A long row that does end converts as before."""
    row = b'2024-07-01T02:00:00Z,u,1,true,e,p,"' + b"x" * 3000 + b'",1.5\n'
    csv = damage + row * 200
    scanned = []
    rows_end = parquet._rows_end
    monkeypatch.setattr(parquet, "_rows_end", lambda data, *a: scanned.append(len(data)) or rows_end(data, *a))
    monkeypatch.setattr(parquet, "PIECE_BYTES", 1000)  # rows of 3 KB: three pieces each
    if damage:
        with pytest.raises(ConversionError, match="does not end in a newline"):
            convert(io.BytesIO(csv), io.BytesIO(), header=False, compression="zstd")
    else:
        assert convert(io.BytesIO(csv), io.BytesIO(), header=False, compression="zstd").rows == 200
    assert sum(scanned) <= 2 * len(csv)


def test_a_row_longer_than_any_event_can_render_is_refused_once_read_that_far(monkeypatch):
    """A damaged window whose quote never closes is one row to its end: refused once it passes the
    longest row an event of --max-body can give, not held whole in memory (a window of 1 GiB)."""
    row = b'2024-07-01T02:00:00Z,u,1,true,e,p,"' + b"x" * 3000 + b'",1.5\n'
    monkeypatch.setattr(parquet, "PIECE_BYTES", 1000)
    reads = []

    class Source(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    with pytest.raises(ConversionError, match="longer than"):
        convert(Source(b'"' + row * 200), io.BytesIO(), header=False, compression="zstd", max_row_bytes=10_000)
    assert sum(reads) <= 12_000  # stopped there, not at the file's end
    assert convert(io.BytesIO(row * 3), io.BytesIO(), header=False, compression="zstd", max_row_bytes=3100).rows == 3
