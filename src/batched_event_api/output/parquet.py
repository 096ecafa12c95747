"""A committed window's CSV into one Parquet file (a stand-in on this branch, replaced by main's
module of the same signature): the only module that imports pyarrow."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from batched_event_api.events.timestamps import parse

SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("time_offset_minutes", pa.int16(), nullable=False),
        pa.field("uuid", pa.string(), nullable=False),
        pa.field("id", pa.int64(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("email", pa.string(), nullable=False),
        pa.field("phone", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("credits", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class Converted:
    rows: int
    csv_bytes: int
    parquet_bytes: int


def convert(source: BinaryIO, destination: BinaryIO, *, header: bool, compression: str) -> Converted:
    data = source.read()
    reader = csv.reader(io.StringIO(data.decode(), newline=""))
    if header:
        next(reader, None)
    columns: list[list[object]] = [[] for _ in SCHEMA]
    for time_text, uuid, ident, active, email, phone, description, credits in reader:
        ns, _ = parse(time_text)
        offset = (
            0
            if time_text.endswith("Z")
            else (1 if time_text[-6] == "+" else -1) * (int(time_text[-5:-3]) * 60 + int(time_text[-2:]))
        )
        for column, value in zip(
            columns,
            (ns, offset, uuid, int(ident), active == "true", email, phone, description, float(credits)),
        ):
            column.append(value)
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA)
    start = destination.tell()
    pq.write_table(table, destination, compression=compression)
    return Converted(table.num_rows, len(data), destination.tell() - start)
