"""A window's way out of the state directory (output/finish.py): the CSV as it is or converted
into Parquet, under its partition, into a store; the conversion's temporary file never visible,
never left behind, and one a crash left removed at the next start."""

from __future__ import annotations

import io
import os

import pytest

from batched_event_api.config import Compress, Format
from batched_event_api.output.finish import PARQUET_TYPE, Finish, Shape, Unconvertible
from batched_event_api.output.memory import MemoryStore
from batched_event_api.output.partition import Partition
from batched_event_api.output.store import StoreError

NAME = "user-events-20240701-020000.0011223344556677.csv"
CSV = b'2024-07-01T02:00:00.5+05:30,u,7,true,e@x,,"a,b",1.5\n2024-07-01T02:01:00Z,,0,false,,,,-0\n'
PARQUET = Shape(Format.PARQUET, Compress.ZSTD, partition=Partition("dt=%Y-%m-%d/hour=%H"))


def _put(finish: Finish, data: bytes = CSV) -> tuple[str, str]:
    return finish.put(NAME, io.BytesIO(data), len(data))


def test_a_csv_window_goes_under_its_partition_as_it_is(tmp_path):
    store = MemoryStore()
    finish = Finish(tmp_path, store, Shape(partition=Partition("dt=%Y-%m-%d")), read_whole_below=1 << 20)
    assert _put(finish) == ("dt=2024-07-01/user-events-20240701-020000.csv", "created")
    assert store.read("dt=2024-07-01/user-events-20240701-020000.csv") == CSV
    assert store.objects["dt=2024-07-01/user-events-20240701-020000.csv"][2]["content-type"] == "text/csv"
    assert store.identity("dt=2024-07-01/user-events-20240701-020000.csv").window_id == "0011223344556677"  # type: ignore[union-attr]


@pytest.mark.parametrize("read_whole_below", [0, 1 << 20], ids=["streamed", "read-whole"])
def test_a_parquet_window_is_converted_and_published_and_its_temporary_file_removed(tmp_path, read_whole_below):
    import pyarrow.parquet as pq

    store = MemoryStore()
    finish = Finish(tmp_path, store, PARQUET, read_whole_below=read_whole_below)
    name = "dt=2024-07-01/hour=02/user-events-20240701-020000.parquet"
    assert _put(finish) == (name, "created")
    table = pq.read_table(io.BytesIO(store.read(name)))
    assert table.column("id").to_pylist() == [7, 0]
    assert table.column("time_offset_minutes").to_pylist() == [330, 0]
    assert store.objects[name][2]["content-type"] == PARQUET_TYPE
    assert os.listdir(tmp_path) == []  # the temporary file is gone
    # Converted again after a crash before the release: its own earlier create, by its id.
    assert _put(finish) == (name, "already_there")


def test_a_failing_store_or_conversion_leaves_no_temporary_file(tmp_path):
    store = MemoryStore()
    store.failing = True
    finish = Finish(tmp_path, store, PARQUET, read_whole_below=1 << 20)
    with pytest.raises(StoreError):
        _put(finish)
    assert os.listdir(tmp_path) == []
    store.failing = False
    with pytest.raises(Unconvertible):
        _put(finish, b"not,a,window\n")
    assert os.listdir(tmp_path) == [] and store.objects == {}


def test_conversions_a_crash_cut_short_are_removed_at_start_and_nothing_else(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / f".{NAME}.0123456789abcdef.parquet.tmp").write_bytes(b"PAR1 half")
    (state / f".{NAME}.fedcba9876543210.parquet.tmp").symlink_to(outside)  # removed, never followed
    keep = [NAME, ".journal", ".user-events-20240701-020000.inprogress", ".other.parquet.tmp"]
    for name in keep:
        (state / name).write_bytes(b"x\n")
    Finish(state, MemoryStore(), PARQUET, read_whole_below=1 << 20).remove_temporaries()
    assert sorted(os.listdir(state)) == sorted(keep)
    assert outside.read_bytes() == b"keep\n"


def test_a_window_that_cannot_be_converted_stays_and_holds_up_no_other(tmp_path, caplog):
    """A window file changed by someone else into bytes that are no window's CSV: said once,
    left in the state directory (never lost), tried again at each turn; the others go on."""
    from batched_event_api.metrics import Metrics
    from batched_event_api.output.uploader import Uploader, UploadReport

    bad, good = NAME, "user-events-20240701-030000.8899aabbccddeeff.csv"
    (tmp_path / bad).write_bytes(b"not,a,window\n")
    (tmp_path / good).write_bytes(CSV)
    store = MemoryStore()
    uploader = Uploader(tmp_path, store, UploadReport(Metrics()), shape=PARQUET)
    for _ in range(2):
        assert uploader.turn() is not None  # no stage failed
    uploader.stop()
    assert sorted(store.objects) == ["dt=2024-07-01/hour=03/user-events-20240701-030000.parquet"]
    assert sorted(os.listdir(tmp_path)) == [bad]  # the good one released, the bad one kept
    assert caplog.text.count("cannot be converted into Parquet") == 1


def test_a_directory_at_a_temporary_name_does_not_keep_the_others_from_being_removed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / f".{NAME}.0000000000000000.parquet.tmp").mkdir()  # someone else's: left alone
    for n in range(1, 21):  # whatever order scandir gives, some come after the directory
        (state / f".{NAME}.{n:016x}.parquet.tmp").write_bytes(b"PAR1 half")
    (state / ".finish-shape.0123456789abcdef.tmp").write_bytes(b"{")  # a record's write cut short
    Finish(state, MemoryStore(), PARQUET, read_whole_below=1 << 20).remove_temporaries()
    assert os.listdir(state) == [f".{NAME}.0000000000000000.parquet.tmp"]


def test_the_state_directory_records_its_shape_and_refuses_another_while_it_holds_windows(tmp_path):
    store = MemoryStore()
    flat_csv = Finish(tmp_path, store, Shape(), read_whole_below=1 << 20)
    flat_csv.claim()
    (tmp_path / NAME).write_bytes(CSV)  # a window, perhaps in the store already
    Finish(tmp_path, store, Shape(), read_whole_below=1 << 20).claim()  # the same shape: fine
    for other in (PARQUET, Shape(partition=Partition("dt=%Y")), Shape(header=True)):
        with pytest.raises(ValueError, match="serve it with those until they are out") as refused:
            Finish(tmp_path, store, other, read_whole_below=1 << 20).claim()
        assert "--format csv without --partition without --header" in str(refused.value)
    flat_csv.release_claim()  # a window left: kept
    (tmp_path / NAME).unlink()
    flat_csv.release_claim()
    assert os.listdir(tmp_path) == []
    Finish(tmp_path, store, PARQUET, read_whole_below=1 << 20).claim()  # nothing left: any shape
    assert os.listdir(tmp_path) == [".finish-shape"]
    assert oct(os.stat(tmp_path / ".finish-shape").st_mode & 0o777) == "0o600"


def test_the_shape_record_goes_only_after_the_windows_removals_are_durable(tmp_path, monkeypatch):
    finish = Finish(tmp_path, MemoryStore(), PARQUET, read_whole_below=1 << 20)
    finish.claim()
    calls: list[str] = []
    real_fsync, real_unlink = os.fsync, os.unlink
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        os, "unlink", lambda path, **kw: calls.append(f"unlink {os.path.basename(path)}") or real_unlink(path, **kw)
    )
    finish.release_claim()
    assert calls == ["fsync", "unlink .finish-shape"]


@pytest.mark.parametrize("stamp", ["20241399-000000", "00000101-000000", "20240230-250000"])
def test_a_file_named_for_a_time_that_never_was_holds_up_no_other(tmp_path, caplog, stamp):
    """A file someone put in the state directory under a window's name whose stamp is no date
    (the writer never makes one): no partition can be told for it; said once and left there, as
    a window that cannot be converted is, not a failed turn at each retry (backing off them all)."""
    from batched_event_api.metrics import Metrics
    from batched_event_api.output.uploader import Uploader, UploadReport

    bad, good = f"user-events-{stamp}.0011223344556677.csv", "user-events-20240701-030000.8899aabbccddeeff.csv"
    (tmp_path / bad).write_bytes(CSV)
    (tmp_path / good).write_bytes(CSV)
    store = MemoryStore()
    uploader = Uploader(tmp_path, store, UploadReport(Metrics()), shape=PARQUET)
    for _ in range(2):
        assert uploader.turn() is not None  # no stage failed
    uploader.stop()
    assert sorted(store.objects) == ["dt=2024-07-01/hour=03/user-events-20240701-030000.parquet"]
    assert sorted(os.listdir(tmp_path)) == [bad]
    assert caplog.text.count("no window's time") == 1
