"""What converting a window to Parquet costs: `python bench/convert.py --size 1024` writes a CSV
window of about 1024 MB (realistic events, as the writer renders them), converts it in a process
of its own, and prints the CSV read per second, rows per second, the Parquet file's size against
the CSV's, its .csv.gz's (one gzip member per write, as --compress gzip writes it) and its
.csv.zst's, and the converting process's peak RSS.

    .venv/bin/python bench/convert.py --size 1024 [--compression zstd] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batched_event_api.events.transcode import transcode
from bench import WORKDIR, generate

MB = 1000**2
WRITE = 4 * 1024**2  # bytes per compressed write, as a commit round of about this size would write


def write_window(path: Path, size: int) -> int:
    """A CSV window of about `size` bytes: 50,000 generated events' rows, repeated (longer than
    any compressor's window, so the repeats do not flatter the sizes)."""
    lines, _ = generate(50_000, random.Random(1), 1_720_000_000 * 10**9)
    batch = transcode(b"".join(lines), 8 * 1024**2)
    rows = b"".join(bytes(chunk) for chunk in batch.rows.chunks(0, len(batch)))
    written = 0
    with path.open("wb") as f:
        while written < size:
            piece = rows[: size - written]
            piece = piece[: piece.rfind(b"\n") + 1]
            if not piece:
                break
            f.write(piece)
            written += len(piece)
    return written


def compressed_size(path: Path, encode) -> int:
    total = 0
    with path.open("rb") as f:
        while data := f.read(WRITE):
            total += len(encode(data))
    return total


def convert_here(source: Path, compression: str) -> None:
    """The conversion alone, in this process: prints its figures as JSON."""
    from batched_event_api.output.parquet import convert

    started = time.perf_counter()
    with source.open("rb") as csv, source.with_suffix(".parquet").open("wb") as parquet:
        converted = convert(csv, parquet, header=False, compression=compression)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "rows": converted.rows,
                "csv": converted.csv_bytes,
                "parquet": converted.parquet_bytes,
                "seconds": seconds,
                "peak_rss_mib": peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="MB of CSV in the window")
    parser.add_argument("--compression", default="zstd", choices=["zstd", "snappy", "gzip", "none"])
    parser.add_argument("--keep", action="store_true", help="leave the files in bench/out")
    parser.add_argument("--convert-only", type=Path, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.convert_only:
        convert_here(args.convert_only, args.compression)
        return
    import zstandard

    WORKDIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=WORKDIR))
    try:
        source = workdir / "window.csv"
        size = write_window(source, args.size * MB)
        child = subprocess.run(
            [sys.executable, __file__, "--convert-only", str(source), "--compression", args.compression],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(child.stdout)
        gz = compressed_size(source, lambda data: gzip.compress(data, compresslevel=6, mtime=0))
        zst = compressed_size(source, zstandard.ZstdCompressor(level=3).compress)
        seconds = figures["seconds"]
        print(f"CSV window      {size / MB:10.1f} MB, {figures['rows']:,} rows")
        print(
            f"conversion      {seconds:10.1f} s: {size / MB / seconds:.1f} MB/s of CSV, {figures['rows'] / seconds:,.0f} rows/s"
        )
        print(f"peak RSS        {figures['peak_rss_mib']:10.1f} MiB (the converting process)")
        for name, bytes_ in ((f"parquet ({args.compression})", figures["parquet"]), ("csv.gz", gz), ("csv.zst", zst)):
            print(f"{name:<15} {bytes_ / MB:10.1f} MB, {bytes_ / size:.1%} of the CSV")
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
