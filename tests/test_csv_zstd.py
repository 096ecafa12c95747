"""`--compress zstd`: committed windows as `.csv.zst`, one zstd frame per write. The frames read as
one stream (`zstd -d`, python `zstandard`, DuckDB's `read_csv`) and give the uncompressed files'
bytes; a crash mid-round leaves a file that recovery cuts back to whole frames."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
import zstandard

from batched_event_api.commit.partfiles import part_name
from batched_event_api.commit.writer import Writer
from batched_event_api.config import Compress
from batched_event_api.metrics import Metrics
from batched_event_api.output.memory import MemoryStore
from batched_event_api.output.uploader import Uploader, UploadReport
from model import generate_events, model_files, ndjson, requests_of
from snapshots import csv_files, window_files
from test_readers import read_rows, sent_row
from test_writer import batches, inject
from writer_setup import POLICY, Crash

FRAME_MAGIC = b"\x28\xb5\x2f\xfd"


def unzstd(data: bytes) -> bytes:
    """Every frame of a .csv.zst, decoded as one stream."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


def decoded(directory: Path) -> dict[str, bytes]:
    """The .csv.zst windows of a directory, decompressed, under their .csv names."""
    files = window_files(directory)
    assert files and all(name.endswith(".csv.zst") for name in files)
    return {name.removesuffix(".zst"): unzstd(data) for name, data in files.items()}


def test_a_served_directory_holds_the_reference_files_as_zstd_frames(server_factory, tmp_path, monkeypatch):
    rng = random.Random(7)
    events = generate_events(rng, 600)
    server = server_factory("--compress", "zstd", output=tmp_path / "data")
    for request in requests_of(events, rng, [1, 5, 40]):  # one request at a time: a frame each
        assert server.post(ndjson(request)).json() == {"accepted": len(request)}
    assert server.stop() == 0
    files = window_files(tmp_path / "data")
    assert decoded(tmp_path / "data") == model_files(events)
    assert max(data.count(FRAME_MAGIC) for data in files.values()) > 3  # appended frame by frame
    if shutil.which("zstd"):  # the command-line tool reads the frames as one file too
        for name, data in files.items():
            out = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, check=True).stdout
            assert out == model_files(events)[name.removesuffix(".zst")]
    # DuckDB reads .csv.zst by its name, with the README's options and nothing about compression.
    monkeypatch.chdir(tmp_path)
    table = duckdb.sql(r"""
        SELECT time, coalesce(uuid, '') AS uuid, id, active, coalesce(email, '') AS email,
               coalesce(phone, '') AS phone, coalesce(description, '') AS description, credits
        FROM read_csv('data/*.csv.zst', header = false, delim = ',', quote = '"', escape = '"', new_line = '\n',
            columns = {'time': 'TIMESTAMPTZ_NS', 'uuid': 'VARCHAR', 'id': 'BIGINT', 'active': 'BOOLEAN',
                       'email': 'VARCHAR', 'phone': 'VARCHAR', 'description': 'VARCHAR', 'credits': 'DOUBLE'})
    """).to_arrow_table()
    assert sorted(read_rows(table)) == sorted(sent_row(e) for e in events)


@pytest.mark.parametrize("point", ["no-record", "torn-record", "rows-lost", "sync_data"])
@pytest.mark.parametrize("crash_at", [7, 19])
def test_recovery_cuts_a_window_back_to_whole_frames(tmp_path, monkeypatch, point, crash_at):
    """A crash between a round's frames and its record (or a power cut that loses the frames):
    the next start cuts the open window to its recorded size, a frame boundary, so it stays
    readable; carrying on gives the files an uncompressed run gives."""
    work = batches()
    plain = tmp_path / "plain"
    writer = Writer(plain, POLICY)
    writer.start()
    for i, (times, rows) in enumerate(work):
        writer.apply(times, rows, key=f"k{i}")
    writer.commit_open()
    writer.close()

    directory = tmp_path / "zstd"
    sync = {"syncfs_from": None} if point == "sync_data" else {}  # per-file syncs, where the crash is
    writer = Writer(directory, POLICY, compress=Compress.ZSTD, **sync)
    writer.start()
    for i, (times, rows) in enumerate(work[:crash_at]):
        writer.apply(times, rows, key=f"k{i}")
    inject(writer, point, monkeypatch)
    with pytest.raises(Crash):
        writer.apply(*work[crash_at], key=f"k{crash_at}")
    writer.close()
    monkeypatch.undo()

    writer = Writer(directory, POLICY, compress=Compress.ZSTD)
    writer.start()
    assert writer.open is not None
    part = (directory / part_name(writer.open.name)).read_bytes()
    assert len(part) == writer.open.size
    assert csv_files(plain)[writer.open.name.removesuffix(".zst")].startswith(unzstd(part))
    for i, (times, rows) in enumerate(work[crash_at:], start=crash_at):
        writer.apply(times, rows, key=f"k{i}")  # resent: a replay where the crash kept it
    writer.commit_open()
    writer.close()
    assert decoded(directory) == csv_files(plain)


def test_snappy_is_for_parquet_only(tmp_path):
    with pytest.raises(ValueError, match="snappy"):
        Writer(tmp_path, POLICY, compress=Compress.SNAPPY)


def test_a_bucket_gets_a_zstd_window_with_its_content_encoding(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    data = zstandard.ZstdCompressor().compress(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    (state / "user-events-20240701-020000.00112233445566aa.csv.zst").write_bytes(data)
    store = MemoryStore()
    uploader = Uploader(state, store, UploadReport(Metrics()))
    uploader.start()
    assert uploader.drain(30)
    uploader.stop()
    name = "user-events-20240701-020000.csv.zst"
    assert store.read(name) == data
    assert store.objects[name][2] == {"content-type": "text/csv", "content-encoding": "zstd"}
