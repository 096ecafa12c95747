"""The uploader against the in-memory store (output/memory.py): what it does with the state
directory (what stays while the journal names it, failing scans and removals retried, large
windows streamed) needs no S3; the bucket's own semantics are tested in test_s3.py."""

from __future__ import annotations

import errno
import gzip
import hashlib

from batched_event_api.commit.disk import LocalDisk
from batched_event_api.metrics import Metrics
from batched_event_api.output.memory import MemoryStore
from batched_event_api.output.store import Identity
from batched_event_api.output.uploader import Uploader, UploadReport
from polling import wait_for


def _objects(store: MemoryStore) -> dict[str, bytes]:
    return {name: store.read(name) for name in store.objects}


def _failures(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["stage"]: s.value
        for m in metrics.upload_failures.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


def _results(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["result"]: s.value for m in metrics.uploads.collect() for s in m.samples if s.name.endswith("_total")
    }


class RefusingDisk(LocalDisk):
    """Refuses the first `refusals` removals with EACCES."""

    refusals = 1

    def remove(self, name: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise PermissionError(errno.EACCES, "Permission denied", str(self.directory / name))
        super().remove(name)


def test_an_uploaded_window_stays_while_the_last_journal_record_names_it(tmp_path):
    """Recovery reads the last record's windows back: an uploaded window's file must not vanish
    while that record names it, or an acknowledged round would look torn and be rolled back."""
    state = tmp_path / "state"
    state.mkdir()
    window = state / "user-events-20240701-020000.csv"
    window.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    pinned = {window.name}
    store = MemoryStore()
    uploader = Uploader(state, store, UploadReport(Metrics()), pinned=lambda: frozenset(pinned))
    uploader.start()
    assert wait_for(lambda: uploader.awaiting_release == 1)
    assert _objects(store) == {window.name: window.read_bytes()} and window.exists()
    pinned.clear()  # a later record no longer names it
    assert uploader.drain(30)
    uploader.stop()
    assert not window.exists()


def test_a_failing_scan_of_the_state_directory_is_logged_counted_and_retried(tmp_path, caplog):
    """The state directory cannot be read for a while (here: it is gone): the uploader says so,
    counts it by stage, and tries again with backoff instead of ending; once it is back, the
    window in it goes up."""
    state = tmp_path / "state"
    state.mkdir()
    metrics = Metrics()
    store = MemoryStore()
    uploader = Uploader(state, store, UploadReport(metrics))
    uploader.start()
    state.rename(tmp_path / "away")
    uploader.wake()
    assert wait_for(lambda: _failures(metrics).get("scan", 0) >= 1)
    (tmp_path / "away").rename(state)
    window = state / "user-events-20240701-020000.csv"
    window.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    uploader.wake()
    assert wait_for(lambda: "user-events-20240701-020000.csv" in _objects(store))
    assert uploader.drain(30)
    uploader.stop()
    assert not window.exists()
    assert any("scanning" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_refused_removal_is_logged_counted_and_retried_while_uploads_go_on(tmp_path, caplog):
    """Removing an uploaded window fails (here EACCES, once): said, counted by stage, tried again
    after the backoff; the windows published meanwhile still go up, and the file goes in the end."""
    state = tmp_path / "state"
    state.mkdir()
    first, second = state / "user-events-20240701-020000.csv", state / "user-events-20240701-030000.csv"
    first.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    metrics = Metrics()
    store = MemoryStore()
    uploader = Uploader(state, store, UploadReport(metrics), disk=RefusingDisk(state))
    uploader.start()
    uploader.wake()
    assert wait_for(lambda: _failures(metrics).get("release", 0) == 1)
    second.write_bytes(b"2024-07-01T03:00:00Z,,2,false,,,,0\n")
    uploader.wake()
    assert uploader.drain(30)
    uploader.stop()
    assert sorted(_objects(store)) == [first.name, second.name]
    assert list(state.iterdir()) == []
    assert any("removing uploaded windows failed" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_store_outage_is_retried_and_a_window_read_in_parts_lands_whole_with_its_identity(tmp_path):
    """A window of `read_whole_below` bytes or more is hashed and handed to the store as a file
    (for a bucket: a multipart upload), a gzip window with its encoding; an outage of the store
    fails the upload stage, which is retried once it ends. The object keeps the window's id."""
    state = tmp_path / "state"
    state.mkdir()
    data = gzip.compress(b"".join(b"2024-07-01T02:00:00Z,,%d,false,,,,0\n" % i for i in range(5000)))
    window = state / "user-events-20240701-020000.00112233445566aa.csv.gz"
    window.write_bytes(data)
    metrics = Metrics()
    store = MemoryStore()
    store.failing = True
    uploader = Uploader(state, store, UploadReport(metrics), read_whole_below=1024)
    uploader.start()
    assert wait_for(lambda: _failures(metrics).get("upload", 0) >= 1)
    store.failing = False
    assert uploader.drain(30)
    uploader.stop()
    name = "user-events-20240701-020000.csv.gz"
    assert _objects(store) == {name: data}
    assert store.identity(name) == Identity(len(data), hashlib.sha256(data).hexdigest(), "00112233445566aa")
    assert store.objects[name][2] == {"content-type": "text/csv", "content-encoding": "gzip"}
    results = _results(metrics)
    assert results["created"] == 1.0 and results["failed"] >= 1
    assert list(state.iterdir()) == []


class UnreadableDisk(LocalDisk):
    """Another user's file at one window name: opening it is refused (EACCES), as it would be for
    a server not running as root."""

    unreadable = "user-events-20240701-010000.csv"

    def open_read(self, name: str):  # type: ignore[no-untyped-def]
        if name == self.unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.directory / name))
        return super().open_read(name)


def test_a_window_file_the_server_cannot_read_is_left_alone_and_holds_up_no_other(tmp_path, caplog):
    """A file at a window's name that the server may not read (another user's, restored by an
    operator as root) is not one the writer made: said once, left alone, and the windows beside
    it go up at once rather than one batch per backoff behind its failures."""
    state = tmp_path / "state"
    state.mkdir()
    (state / UnreadableDisk.unreadable).write_bytes(b"someone else's\n")
    windows = [state / f"user-events-20240701-02{minute:02d}00.csv" for minute in range(0, 60, 5)]
    for window in windows:
        window.write_bytes(window.name.encode() + b"\n")
    store = MemoryStore()
    uploader = Uploader(state, store, UploadReport(Metrics()), concurrency=1, disk=UnreadableDisk(state))
    uploader.start()
    assert wait_for(lambda: len(store.objects) == len(windows), timeout=10)
    assert uploader.drain(10)  # what it cannot read is not waited for
    uploader.stop()
    assert sorted(store.objects) == [w.name for w in windows]
    assert sorted(p.name for p in state.iterdir()) == [UnreadableDisk.unreadable]
    assert [r.levelname for r in caplog.records if UnreadableDisk.unreadable in r.getMessage()] == ["WARNING"]
