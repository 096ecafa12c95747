"""A finished window's CSV file, as the writer renders it, to one Parquet file, streamed.

The file is read in pieces of whole rows, Arrow's CSV parser takes each (explicit names and types,
values may hold newlines, nothing is ever read as null), the `time` text gives the instant and the
event's own offset by vectorised compute, and the rows are written in row groups of bounded size:
memory stays flat whatever the window's size. Arrow's parsers are exact on what the writer renders: ISO
8601 with an offset to the nanosecond, and Go's shortest float text to the same bits (subnormals
of 300+ digits included).

pyarrow is imported here only, and only when a window is converted: a process that never converts
never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from batched_event_api.config import MiB
from batched_event_api.events.render import COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

# Parquet's compressions, as `--compress` names them.
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
# Arrow data gathered before it is written as one row group: the bulk of the memory a conversion
# takes (32 MiB made files 10% smaller and the finish process 40 MiB larger); about 100,000 rows
# of typical events, near DuckDB's own row group size.
ROW_GROUP_BYTES = 16 * MiB
# CSV bytes read and parsed at a time (more when one row is longer). Arrow's streaming CSV reader
# is not used: it reads up to 32 blocks ahead of the rows it has converted.
PIECE_BYTES = 1 * MiB

HEADER = (",".join(COLUMNS) + "\n").encode()
# The text the writer gives `time` (Go's RFC3339Nano): the zone is `Z` or the last six characters.
_TIME_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
# Arrow's messages quote the row they stopped at: only these parts of them are repeated.
_SAFE_DETAIL = re.compile(
    r"Expected \d+ columns, got \d+|In CSV column #\d+: (?:Row #\d+: )?CSV conversion error to \w+"
)


@dataclass(frozen=True, slots=True)
class Converted:
    rows: int
    csv_bytes: int
    parquet_bytes: int


class ConversionError(ValueError):
    """The CSV file is not what the writer renders (nothing is left written)."""


def convert(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    header: bool,
    compression: str,
    row_group_bytes: int = ROW_GROUP_BYTES,
    max_row_bytes: int | None = None,
) -> Converted:
    """The CSV rows read from `source` as one Parquet file written to `destination` (at its
    position; seekable: on any error it is cut back to where it was). The same CSV always gives
    the same bytes. A row longer than `max_row_bytes` (see max_row_bytes()) is damage: refused
    once read that far, not gathered whole."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown Parquet compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    start = destination.tell()
    try:
        rows, csv_bytes = _write(source, destination, header, compression, row_group_bytes, max_row_bytes)
    except BaseException:
        destination.seek(start)
        destination.truncate()
        raise
    return Converted(rows, csv_bytes, destination.tell() - start)


def schema() -> pa.Schema:
    """The Parquet file's columns: the CSV's, with the event's own offset after `time`, none null."""
    import pyarrow as pa

    types = [
        ("time", pa.timestamp("ns", tz="UTC")),
        ("time_offset_minutes", pa.int16()),
        ("uuid", pa.string()),
        ("id", pa.int64()),
        ("active", pa.bool_()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("description", pa.string()),
        ("credits", pa.float64()),
    ]
    return pa.schema([pa.field(name, kind, nullable=False) for name, kind in types])


def max_row_bytes(max_body: int) -> int:
    """The longest CSV row an event of a body of `max_body` bytes renders: each byte of its JSON
    at most three of CSV (an invalid UTF-8 byte is U+FFFD), with the quotes and the numbers the
    JSON need not spell out (a credits of 300+ digits)."""
    return 3 * max_body + 64 * 1024


def _write(
    source: BinaryIO,
    destination: BinaryIO,
    header: bool,
    compression: str,
    row_group_bytes: int,
    max_row_bytes: int | None,
) -> tuple[int, int]:
    """Rows and CSV bytes converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _use_jemalloc()
    csv_bytes = 0
    if header:
        if source.read(len(HEADER)) != HEADER:
            raise ConversionError("not a CSV file as the writer renders it: no header line")
        csv_bytes = len(HEADER)
    target = schema()
    # gzip at level 6, as for .csv.gz: Arrow's 9 takes twice the time for 0.5% less.
    level = 6 if compression == "gzip" else None
    writer = pq.ParquetWriter(destination, target, compression=compression, compression_level=level, version="2.6")
    rows, pending, pending_bytes = 0, [], 0
    try:
        for piece in _pieces(source, max_row_bytes):
            csv_bytes += len(piece)
            for batch in _parsed(piece).to_batches():
                converted = _converted(batch, target)
                pending.append(converted)
                pending_bytes += converted.nbytes
                rows += converted.num_rows
            if pending_bytes >= row_group_bytes:
                _write_group(writer, pa.Table.from_batches(pending, schema=target))
                pending, pending_bytes = [], 0
        if pending:
            _write_group(writer, pa.Table.from_batches(pending, schema=target))
    finally:
        writer.close()  # leaves `destination` open (a file object is the caller's)
    return rows, csv_bytes


def _use_jemalloc() -> None:
    """Arrow's jemalloc pool where the wheel has it: it hands freed pages back sooner than the
    default mimalloc, which kept a converting process about 40 MiB larger (docs/performance.md)."""
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it
        return
    pa.set_memory_pool(pool)


def _write_group(writer: Any, table: pa.Table) -> None:
    writer.write_table(table, row_group_size=table.num_rows)  # one row group


def _pieces(source: BinaryIO, max_row_bytes: int | None = None) -> Iterator[memoryview]:
    """The CSV in pieces of whole rows, about PIECE_BYTES each (a piece holds at least one row).

    What is read after the last row end is kept in parts, each scanned once when read (with the
    count of `"` before it): a row longer than a piece, or one a damaged file never ends, costs
    its length, not its length times the pieces it spans."""
    carried: list[bytes] = []  # read, holding no row end
    quotes = 0  # `"` in `carried`
    while data := source.read(PIECE_BYTES):
        end = _rows_end(data, quotes)
        if not end:
            carried.append(data)
            quotes += data.count(b'"')
            if max_row_bytes is not None and sum(map(len, carried)) > max_row_bytes:
                raise ConversionError(
                    f"not a CSV file as the writer renders it: a row longer than {max_row_bytes} bytes, more than "
                    "an event of --max-body gives (or it was written under a larger --max-body)"
                )
            continue
        if carried:
            yield memoryview(b"".join([*carried, data[:end]]))
        else:
            yield memoryview(data)[:end]
        carried, rest = [], data[end:]
        if rest:
            carried.append(rest)
        quotes = rest.count(b'"')
    if carried:  # a row cut short, or a quote never closed
        raise ConversionError("not a CSV file as the writer renders it: its last row does not end in a newline")


def _rows_end(data: bytes, quotes_before: int = 0) -> int:
    """Where the last whole row in `data` ends; 0 if none does. `data` comes after a row's start
    and `quotes_before` `"` (and no row end) in between.

    In Go's CSV every quoted field holds an even number of `"` with its delimiters: a newline ends
    a row exactly when an even number of `"` come before it. Counting runs backwards from the end,
    over the last row's bytes only, jumping to the previous `"` from a newline inside a value."""
    quotes, end = quotes_before + data.count(b'"'), len(data)  # quotes: how many come before `end`
    while (newline := data.rfind(b"\n", 0, end)) >= 0:
        quotes -= data.count(b'"', newline, end)
        if quotes % 2 == 0:
            return newline + 1
        end = data.rfind(b'"', 0, newline)  # no row ends between that `"` and the newline
        if end < 0:  # that `"` came before `data`
            return 0
        quotes -= 1
    return 0


def _parsed(piece: memoryview) -> pa.Table:
    """One piece of whole rows as the CSV's columns; the writer's types, nothing null."""
    import pyarrow as pa
    import pyarrow.csv as csv

    strings = {name: pa.string() for name in ("time", "uuid", "email", "phone", "description")}
    try:
        return csv.read_csv(
            pa.BufferReader(pa.py_buffer(piece)),
            read_options=csv.ReadOptions(column_names=list(COLUMNS), block_size=len(piece) + 1, use_threads=False),
            parse_options=csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(
                column_types={**strings, "id": pa.int64(), "active": pa.bool_(), "credits": pa.float64()},
                null_values=[],  # nothing is null: "", "NA", "null" are strings, an empty number an error
                strings_can_be_null=False,
                true_values=["true"],
                false_values=["false"],
            ),
        )
    except pa.ArrowInvalid as exc:
        raise _as_error(exc) from None


def _as_error(exc: Exception) -> ConversionError:
    """Arrow's error as ours, without the row text its message quotes (event data)."""
    detail = _SAFE_DETAIL.search(str(exc))
    return ConversionError(
        "not a CSV file as the writer renders it" + (f": {detail.group(0)}" if detail else " (it does not parse)")
    )


def _converted(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """A batch of CSV columns in the Parquet file's columns: `time` as the instant and the offset."""
    import pyarrow as pa

    time = batch.column("time")
    instants, offsets = _instants(time), _offsets(time)
    columns = [instants, offsets] + [batch.column(name) for name in COLUMNS[1:]]
    return pa.RecordBatch.from_arrays(columns, schema=target)


def _instants(time: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pc.all(pc.match_substring_regex(time, _TIME_TEXT)).as_py():
        raise ConversionError("not a CSV file as the writer renders it: a time is not RFC 3339 with a zone")
    try:
        return pc.cast(time, pa.timestamp("ns", tz="UTC"))  # Arrow applies the offset
    except pa.ArrowInvalid:  # a date that does not exist, or an instant beyond int64 nanoseconds
        raise ConversionError("not a CSV file as the writer renders it: a time out of range") from None


def _offsets(time: pa.Array) -> pa.Array:
    """Minutes east of UTC of each time's text: `Z` 0, `±hh:mm` as written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    zone = pc.if_else(pc.ends_with(time, "Z"), "+00:00", pc.utf8_slice_codeunits(time, -6))
    hours = pc.cast(pc.utf8_slice_codeunits(zone, 1, 3), pa.int16())
    minutes = pc.cast(pc.utf8_slice_codeunits(zone, 4, 6), pa.int16())
    east = pc.add(pc.multiply(hours, 60), minutes)
    return pc.if_else(pc.starts_with(zone, "-"), pc.negate(east), east).cast(pa.int16())
