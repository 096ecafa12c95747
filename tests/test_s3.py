"""A bucket as output, against real S3 API servers on loopback (moto's; SeaweedFS too for the
end-to-end tests), with the real server as a subprocess: the same names and bytes as local output,
exactly once across SIGKILL, nothing lost while the store is cut off, two instances on one bucket,
multipart uploads of large windows."""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batched_event_api.commit.writer import Writer
from batched_event_api.config import BucketUrl
from batched_event_api.events.transcode import transcode
from batched_event_api.metrics import Metrics
from batched_event_api.output.s3 import CHECKSUM_KEY, WINDOW_ID_KEY, S3Bucket
from batched_event_api.output.uploader import Uploader, UploadReport, _sha256
from model import generate_events, model_files, ndjson
from paths import GOLDEN, SEED
from polling import wait_for
from powercut import PowerCutDisk
from s3store import S3_SERVERS, SECRET, Bucket, Relay
from servers import Server, post_maybe_killed, run_cli
from snapshots import csv_files
from writer_setup import POLICY

# The end-to-end tests (a server subprocess, or S3Bucket in a process of its own) run against each
# S3 server, moto's and SeaweedFS. The others drive the uploader or the CLI's checks directly: what
# they test is this code, not the store, so their `bucket` is on moto's (the `s3` default).
on_each_s3_server = pytest.mark.parametrize("s3", S3_SERVERS, indirect=True)


def _serve(bucket: Bucket, tmp_path: Path, *args: str, state: str = "state", endpoint: str | None = None) -> Server:
    return Server(
        bucket.url,
        "--state-dir",
        str(tmp_path / state),
        *args,
        env=bucket.env(endpoint),  # type: ignore[arg-type]
        log_dir=tmp_path,
    ).start()


def _backlog(server: Server) -> dict:
    return server.client.get("/readyz").json()["backlog"]


GOLDEN_REPLAYS = {
    "seed-datasets": (
        [SEED / "initial-dataset-01.ndjson", SEED / "initial-dataset-02.ndjson"],
        GOLDEN / "seed-datasets",
    ),
    "tricky": (sorted((GOLDEN / "tricky" / "requests").glob("*.ndjson")), GOLDEN / "tricky" / "expected"),
}


@on_each_s3_server
@pytest.mark.parametrize("replay", sorted(GOLDEN_REPLAYS))
def test_golden_replays_land_in_the_bucket_byte_identical(bucket, tmp_path, replay):
    requests, expected = GOLDEN_REPLAYS[replay]
    server = _serve(bucket, tmp_path)
    for path in requests:
        assert server.post(path.read_bytes()).status_code == 200
    assert server.stop() == 0  # commits the open window and waits for its upload
    objects = bucket.objects()
    assert objects == csv_files(expected)
    head = bucket.head(next(iter(objects)))
    assert head["ContentType"] == "text/csv" and "ContentEncoding" not in head
    # Nothing stays behind in the state directory but the journal and the lock.
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [".journal", ".lock"]
    assert SECRET not in server.log.read_text()  # credentials never logged


@on_each_s3_server
def test_gzip_windows_carry_their_encoding(bucket, tmp_path):
    server = _serve(bucket, tmp_path, "--compress", "gzip")
    requests, expected = GOLDEN_REPLAYS["seed-datasets"]
    for path in requests:
        assert server.post(path.read_bytes()).status_code == 200
    assert server.stop() == 0
    objects = bucket.objects()
    golden = csv_files(expected)
    assert sorted(objects) == sorted(name + ".gz" for name in golden)
    for name, data in objects.items():
        assert gzip.decompress(data) == golden[name[:-3]]
        head = bucket.head(name)
        assert (head["ContentType"], head["ContentEncoding"]) == ("text/csv", "gzip")


@on_each_s3_server
@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("BEA_S3_CRASH_SEEDS", "5").split(",")])
def test_sigkill_at_any_point_with_resends_leaves_the_bucket_as_a_clean_run(bucket, tmp_path, seed):
    rng = random.Random(seed)
    events = generate_events(rng, 3000)
    bodies, i = [], 0
    while i < len(events):
        n = rng.choice([1, 20, 100, 200])
        bodies.append(ndjson(events[i : i + n]))
        i += n
    server = _serve(bucket, tmp_path, "--drain-timeout", "120s")
    kills, landed = 0, collections.Counter()
    index = 0
    try:
        while index < len(bodies):
            response, killed = post_maybe_killed(server, bodies[index], f"req-{index}", rng, within=0.02)
            if response is not None:
                assert response.status_code == 200, response.text
                index += 1
            if server.proc.poll() is not None or killed:
                waiting = [p for p in (tmp_path / "state").iterdir() if not p.name.startswith(".")]
                landed["with windows waiting for upload" if waiting else "with nothing to upload"] += 1
                server.kill()
                kills += 1
                server = _serve(bucket, tmp_path, "--drain-timeout", "120s")  # the same state: recover, resume uploads
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.kill()
    found_own = sum(log.read_text().count("(already_there)") for log in tmp_path.glob("server-*.log"))
    print(
        f"seed {seed}: {len(bodies)} requests, {kills} kills; landed: {dict(landed)}; "
        f"uploads found already done after a kill: {found_own}"
    )
    assert kills >= 10 and landed["with windows waiting for upload"] >= 1
    assert bucket.objects() == model_files(events)


@pytest.mark.parametrize("window_ids", [True, False], ids=["window-ids", "state-dir-before-ids"])
def test_power_cuts_bring_back_uploaded_windows_and_the_next_start_knows_them_as_its_own(bucket, tmp_path, window_ids):
    """The uploader does not sync its removals of uploaded windows: a power cut (tests/powercut.py:
    whatever was not synced is lost) brings them back, and the next start must find each in the
    bucket as its own upload, not write it again under a -N name: by the window id in its name
    (as the server names windows with a bucket), or by size and SHA-256 for names from before
    ids. The real writer and uploader share the disk double; the bucket ends as a clean run's."""
    rng = random.Random(11)
    events = generate_events(rng, 500)
    requests, i = [], 0
    while i < len(events):
        n = rng.choice([1, 5, 20])
        prepared = transcode(ndjson(events[i : i + n]), max_line=1 << 22)
        requests.append((prepared.times, prepared.rows))
        i += n
    state = tmp_path / "state"
    state.mkdir()
    disk = PowerCutDisk(state)
    store = S3Bucket(BucketUrl.parse(bucket.url), environ=bucket.env())
    metrics = Metrics()

    def started() -> tuple[Writer, Uploader]:
        writer = Writer(state, POLICY, disk=disk, window_ids=window_ids)
        writer.start()
        uploader = Uploader(state, store, UploadReport(metrics), pinned=lambda: writer.pinned, disk=disk)
        uploader.start()
        return writer, uploader

    writer, uploader = started()
    cuts = brought_back = 0
    for index, (times, rows) in enumerate(requests):
        writer.apply(times, rows, key=f"k{index}")
        uploader.wake()
        if rng.random() < 0.2:
            writer.settle()  # an idle commit: the journal names no finished window
            uploader.wake()
            assert wait_for(lambda: not uploader.backlog_windows and not uploader.awaiting_release)  # noqa: B023
            uploader.stop()
            writer.close()
            brought_back += len(
                [n for n in disk.unsynced_removals() if not n.startswith(".")]
            )  # windows, not .uploaded
            disk.power_cut()
            cuts += 1
            writer, uploader = started()
    writer.commit_open()
    writer.settle()
    uploader.wake()
    assert uploader.drain(30)
    uploader.stop()
    writer.close()
    results = {
        s.labels["result"]: s.value for m in metrics.uploads.collect() for s in m.samples if s.name.endswith("_total")
    }
    print(
        f"{len(requests)} requests, {cuts} power cuts, {brought_back} uploaded windows brought back by them; "
        f"uploads: {results}"
    )
    assert cuts >= 5 and brought_back >= 5  # the cuts landed where they were aimed
    assert results.get("already_there") == brought_back and "next_name" not in results
    assert bucket.objects() == model_files(events)
    assert {WINDOW_ID_KEY in bucket.head(name)["Metadata"] for name in bucket.objects()} == {window_ids}
    assert sorted(p.name for p in state.iterdir() if not p.name.startswith(".")) == []


def _upload_process(server: Server) -> int | None:
    """The pid of the server's upload process (its only child), or None between two."""
    children = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():  # any thread may have started it
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that just ended
            pass
    return int(children[0]) if children else None


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state first, nice at 16."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _nice(pid: int) -> int:
    return int(_stat(pid)[16])


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


@on_each_s3_server
def test_the_upload_process_is_replaced_when_it_dies_and_goes_when_the_server_is_killed(bucket, tmp_path):
    """Uploads run in a child process, --upload-nice below the server. Killed alone, it is
    replaced and the windows still land, once; a SIGKILLed server takes it along, so it never
    removes files under the next server's recovery."""
    events = generate_events(random.Random(3), 600)
    server = _serve(bucket, tmp_path)
    assert server.post(ndjson(events[:300])).status_code == 200
    first = _upload_process(server)
    assert first is not None and _nice(first) == _nice(server.proc.pid) + 10
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: _upload_process(server) not in (None, first))
    assert server.post(ndjson(events[300:])).status_code == 200
    assert server.stop() == 0
    assert "the upload process exited (status -9); starting another" in server.log.read_text()
    assert bucket.objects() == model_files(events)

    server = _serve(bucket, tmp_path, "--upload-nice", "3")
    child = _upload_process(server)
    assert child is not None and _alive(child) and _nice(child) == _nice(server.proc.pid) + 3
    server.kill()
    assert wait_for(lambda: not _alive(child))


@on_each_s3_server
def test_a_store_outage_loses_nothing_and_the_backlog_is_bounded(bucket, s3, tmp_path):
    relay = Relay(s3.port)
    server = _serve(bucket, tmp_path, "--max-backlog", "4KiB", endpoint=relay.endpoint)
    events = [{"time": f"2024-07-01T{h:02d}:00:00Z", "id": h, "description": "x" * 900} for h in range(12)]
    relay.cut()
    accepted = []
    refused = None
    for event in events:  # one window each: every request commits the previous window
        response = server.post(ndjson([event]))
        if response.status_code == 503:
            refused = response
            break
        assert response.status_code == 200
        accepted.append(event)
        if len(accepted) >= 2:  # wait until the commit has been tried against the cut store
            assert wait_for(lambda: _backlog(server)["windows"] == len(accepted) - 1)
    assert refused is not None and refused.headers["retry-after"] == "1"
    assert "--max-backlog" in refused.json()["error"]
    readiness = server.client.get("/readyz")
    assert readiness.status_code == 503 and readiness.json()["error"].startswith("upload backlog full")
    assert readiness.json()["backlog"]["bytes"] >= 4096
    assert relay.refused >= 1  # the outage was met
    relay.restore()
    assert wait_for(lambda: _backlog(server)["windows"] == 0, timeout=60)  # retried with backoff
    assert server.post(ndjson(events[len(accepted) :])).status_code == 200  # room again
    metrics = server.client.get("/metrics").text
    assert 'bea_uploads_total{result="failed"}' in metrics
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)


# SeaweedFS only: moto's server keeps its objects in memory, so a restart of it loses them.
@pytest.mark.parametrize("s3", ["seaweedfs"], indirect=True)
def test_a_restart_of_the_store_itself_loses_nothing_and_keeps_what_was_uploaded(bucket, s3, tmp_path):
    """The store's own process stops (connections refused, where the relay cuts them) and starts
    again on the same ports and data: what went up before is still there, the windows committed
    meanwhile go up once it is back, each once."""
    server = _serve(bucket, tmp_path)
    events = [{"time": f"2024-07-01T{h:02d}:00:00Z", "id": h} for h in range(2, 8)]
    for event in events[:2]:  # one window each: every request commits the previous window
        assert server.post(ndjson([event])).status_code == 200
    assert wait_for(lambda: bucket.names() == ["user-events-20240701-020000.csv"])
    s3.stop()
    try:
        for event in events[2:]:
            assert server.post(ndjson([event])).status_code == 200
        assert wait_for(lambda: _backlog(server)["windows"] == 4)  # 03:00 to 06:00, none uploaded
        assert 'bea_uploads_total{result="failed"}' in server.client.get("/metrics").text
    finally:
        s3.start()
    assert wait_for(lambda: _backlog(server)["windows"] == 0, timeout=60)  # retried with backoff
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)


@on_each_s3_server
def test_shutdown_waits_for_uploads_up_to_the_drain_timeout_and_the_next_start_uploads_the_rest(bucket, s3, tmp_path):
    relay = Relay(s3.port)
    events = [{"time": "2024-07-01T02:00:00Z", "id": 1}, {"time": "2024-07-01T03:00:00Z", "id": 2}]
    server = _serve(bucket, tmp_path, "--drain-timeout", "1s", endpoint=relay.endpoint)
    relay.cut()
    assert server.post(ndjson(events)).status_code == 200
    assert server.stop() == 0
    assert "not uploaded within --drain-timeout" in server.log.read_text()
    assert bucket.objects() == {}
    status = run_cli("status", "-o", bucket.url, "--state-dir", str(tmp_path / "state"), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["committed_files"] == 2  # what the bucket still lacks, server down
    relay.restore()
    server = _serve(bucket, tmp_path, endpoint=relay.endpoint)  # uploads what the last run left
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)


@on_each_s3_server
def test_two_instances_on_one_bucket_write_every_event_once_and_replace_nothing(bucket, tmp_path):
    first = _serve(bucket, tmp_path, state="state-a")
    second = _serve(bucket, tmp_path, state="state-b")
    a = [{"time": "2024-07-01T02:00:0%dZ" % i, "id": i} for i in range(5)]
    b = [{"time": "2024-07-01T02:00:0%dZ" % i, "id": 100 + i} for i in range(5)]  # the same five minutes
    assert first.post(ndjson(a)).status_code == 200
    assert second.post(ndjson(b)).status_code == 200
    assert first.stop() == 0 and second.stop() == 0
    objects = bucket.objects()
    assert sorted(objects) == ["user-events-20240701-020000-1.csv", "user-events-20240701-020000.csv"]
    # Each instance's window whole under one name: nothing replaced, every event once.
    assert sorted(objects.values()) == sorted(model_files(e)["user-events-20240701-020000.csv"] for e in (a, b))


@on_each_s3_server
def test_a_large_window_goes_up_in_parts(bucket, tmp_path):
    server = _serve(bucket, tmp_path, "--multipart-threshold", "5MiB", "--multipart-chunksize", "5MiB")
    events = [{"time": "2024-07-01T02:00:00Z", "id": i, "description": "y" * 1000} for i in range(12_000)]
    for i in range(0, len(events), 3000):
        assert server.post(ndjson(events[i : i + 3000])).status_code == 200
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)
    name = "user-events-20240701-020000.csv"
    assert len(bucket.objects()[name]) > 10 * 1024 * 1024
    assert bucket.head(name)["ETag"].strip('"').endswith("-3")  # three parts


@on_each_s3_server
def test_a_multipart_upload_holds_about_two_parts_in_memory_not_the_window(bucket, tmp_path):
    """A 40 MiB window in 5 MiB parts, uploaded in a process of its own (moto's server here keeps
    every part in this one): the upload's peak Python allocation stays at about two parts, so
    memory is flat whatever the window's size (10 MiB for 40 MiB and for 120 MiB); the object is
    the file, byte for byte."""
    window = tmp_path / "user-events-20240701-020000.csv"
    with open(window, "wb") as f:
        for i in range(40):
            f.write(bytes([48 + i % 10]) * (1 << 20))
    upload = f"""
import tracemalloc
from batched_event_api.config import BucketUrl
from batched_event_api.output.s3 import S3Bucket
from batched_event_api.output.store import Finished
from batched_event_api.output.uploader import _sha256
store = S3Bucket(BucketUrl.parse({bucket.url!r}), multipart_from=5 << 20, part_size=5 << 20)
digest = _sha256({str(window)!r})
file = open({str(window)!r}, "rb")
tracemalloc.start()
assert store.create({window.name!r}, Finished(file, {window.stat().st_size}, digest, None))
print(tracemalloc.get_traced_memory()[1])
"""
    done = subprocess.run(
        [sys.executable, "-c", upload], env={**os.environ, **bucket.env()}, capture_output=True, text=True, check=True
    )
    peak = int(done.stdout)
    print(f"peak traced memory {peak / 2**20:.1f} MiB for a 40 MiB window in 5 MiB parts")
    assert peak < 3 * (5 << 20)  # the part read from the file and a copy on its way out; not the window's 8
    assert bucket.objects()[window.name] == window.read_bytes()
    assert bucket.head(window.name)["ETag"].strip('"').endswith("-8")


def test_the_uploader_finds_its_own_earlier_upload_and_steps_past_a_foreign_one(bucket, tmp_path):
    """A crash between an upload and the local removal: the object there is this window's own
    (size and SHA-256), so it is done, not uploaded twice. Another window's object under the
    same name makes it take the next free -N name."""
    state = tmp_path / "state"
    state.mkdir()
    own, foreign = state / "user-events-20240701-020000.csv", state / "user-events-20240701-030000.csv"
    own.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    foreign.write_bytes(b"2024-07-01T03:00:00Z,,2,false,,,,0\n")
    bucket.client.put_object(
        Bucket=bucket.name, Key=bucket.prefix + own.name, Body=own.read_bytes(), Metadata={CHECKSUM_KEY: _sha256(own)}
    )
    bucket.client.put_object(Bucket=bucket.name, Key=bucket.prefix + foreign.name, Body=b"someone else's\n")
    metrics = Metrics()
    store = S3Bucket(BucketUrl.parse(bucket.url), environ=bucket.env())
    uploader = Uploader(state, store, UploadReport(metrics))
    uploader.start()
    assert uploader.drain(30)
    uploader.stop()
    assert bucket.objects() == {
        own.name: b"2024-07-01T02:00:00Z,,1,false,,,,0\n",
        foreign.name: b"someone else's\n",
        "user-events-20240701-030000-1.csv": b"2024-07-01T03:00:00Z,,2,false,,,,0\n",
    }
    assert list(state.iterdir()) == []
    results = {
        s.labels["result"]: s.value for m in metrics.uploads.collect() for s in m.samples if s.name.endswith("_total")
    }
    assert results == {"already_there": 1.0, "next_name": 1.0}


def test_a_plain_http_endpoint_needs_aws_allow_http(bucket, tmp_path):
    env = {**bucket.env(), "AWS_ALLOW_HTTP": ""}
    server = Server(bucket.url, "--state-dir", str(tmp_path / "state"), env=env, log_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="set AWS_ALLOW_HTTP=true"):
        server.start()


def _results(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["result"]: s.value for m in metrics.uploads.collect() for s in m.samples if s.name.endswith("_total")
    }


@on_each_s3_server
def test_a_window_file_removed_by_someone_else_after_its_upload_stops_nothing(bucket, tmp_path):
    """An uploaded window's local file, waiting for the journal to let it go, is removed by
    someone else (an operator's cleanup): the uploader's own removal finds it gone, which is
    done, not an error; the windows after it still land and the shutdown drains."""
    server = _serve(bucket, tmp_path, "--idle-close", "1h")
    events = [{"time": f"2024-07-01T{h:02d}:00:00Z", "id": h} for h in (2, 3, 4, 5, 6)]
    assert server.post(ndjson(events[:1])).status_code == 200
    assert server.post(ndjson(events[1:2])).status_code == 200  # commits 02:00, pinned by the last record
    first = "user-events-20240701-020000.csv"
    assert wait_for(lambda: first in bucket.objects())
    [local] = [p for p in (tmp_path / "state").iterdir() if p.name.startswith("user-events-20240701-020000")]
    local.unlink()
    for event in events[2:]:  # later rounds stop naming it: the uploader removes it (gone already)
        assert server.post(ndjson([event])).status_code == 200
    assert wait_for(lambda: len(bucket.objects()) == len(events) - 1)
    assert server.stop() == 0
    log = server.log.read_text()
    assert "not uploaded within --drain-timeout" not in log and "Traceback" not in log
    assert bucket.objects() == model_files(events)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [".journal", ".lock"]


@on_each_s3_server
def test_the_same_bytes_posted_twice_and_committed_apart_are_two_objects(bucket, tmp_path):
    """Two windows with the same start and the same bytes are two windows: a directory keeps
    both (…-000000.csv, …-000000-1.csv) and so must the bucket; content is not identity."""
    server = _serve(bucket, tmp_path, "--idle-close", "1s")
    event = [{"time": "2024-07-01T02:00:00Z", "id": 1}]
    assert server.post(ndjson(event)).status_code == 200
    assert wait_for(lambda: len(bucket.objects()) == 1)  # committed after 1 s idle, and uploaded
    assert server.post(ndjson(event)).status_code == 200  # a second window, the same bytes
    assert server.stop() == 0
    row = model_files(event)["user-events-20240701-020000.csv"]
    assert bucket.objects() == {"user-events-20240701-020000.csv": row, "user-events-20240701-020000-1.csv": row}
    assert "(already_there)" not in server.log.read_text()
    ids = {bucket.head(name)["Metadata"].get(WINDOW_ID_KEY) for name in bucket.objects()}
    assert len(ids) == 2 and None not in ids  # each window with an id of its own


def test_the_uploader_knows_its_own_upload_by_the_window_id_not_by_the_bytes(bucket, tmp_path):
    """A window's state-directory name carries its id (user-events-….<id>.csv), and its object
    the same id in x-amz-meta-window-id: an object under the name with this window's id is its
    own upload from before a crash; the same bytes with another window's id (or none) is
    another window's, and this one takes the next -N name."""
    state = tmp_path / "state"
    state.mkdir()
    row = b"2024-07-01T02:00:00Z,,1,false,,,,0\n"
    own = state / "user-events-20240701-020000.00112233445566aa.csv"
    other = state / "user-events-20240701-030000.00112233445566bb.csv"
    other_row = b"2024-07-01T03:00:00Z,,1,false,,,,0\n"
    own.write_bytes(row)
    other.write_bytes(other_row)
    digest = hashlib.sha256
    bucket.client.put_object(
        Bucket=bucket.name,
        Key=bucket.prefix + "user-events-20240701-020000.csv",
        Body=row,
        Metadata={CHECKSUM_KEY: digest(row).hexdigest(), WINDOW_ID_KEY: "00112233445566aa"},
    )
    bucket.client.put_object(
        Bucket=bucket.name,
        Key=bucket.prefix + "user-events-20240701-030000.csv",
        Body=other_row,
        Metadata={CHECKSUM_KEY: digest(other_row).hexdigest(), WINDOW_ID_KEY: "ffffffffffffffff"},
    )
    metrics = Metrics()
    store = S3Bucket(BucketUrl.parse(bucket.url), environ=bucket.env())
    uploader = Uploader(state, store, UploadReport(metrics))
    uploader.start()
    assert uploader.drain(30)
    uploader.stop()
    assert bucket.objects() == {
        "user-events-20240701-020000.csv": row,
        "user-events-20240701-030000.csv": other_row,
        "user-events-20240701-030000-1.csv": other_row,
    }
    assert bucket.head("user-events-20240701-030000-1.csv")["Metadata"][WINDOW_ID_KEY] == "00112233445566bb"
    assert _results(metrics) == {"already_there": 1.0, "next_name": 1.0}
    assert list(state.iterdir()) == []


@on_each_s3_server
def test_a_symlink_at_a_window_name_in_the_state_directory_is_neither_uploaded_nor_removed(bucket, tmp_path):
    """Only regular files the writer made go up: a link at a finished window's name is skipped
    and said once, its target is not read into the bucket, and the link is left alone."""
    state = tmp_path / "state"
    state.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"not for the bucket\n")
    link = state / "user-events-20240701-090000.csv"
    link.symlink_to(secret)
    server = _serve(bucket, tmp_path)
    events = [{"time": f"2024-07-01T{h:02d}:00:00Z", "id": h} for h in (2, 3, 4)]
    for event in events:
        assert server.post(ndjson([event])).status_code == 200
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)
    assert link.is_symlink() and secret.read_bytes() == b"not for the bucket\n"
    log = server.log.read_text()
    assert "not uploaded within --drain-timeout" not in log
    assert sum(link.name in line for line in log.splitlines()) == 1
    assert "not a regular file" in log


def test_status_counts_only_the_regular_window_files_of_the_state_directory(bucket, tmp_path):
    """What waits for upload is what the uploader would upload: a link at a window's name (even a
    dangling one) is not a committed window, and its target's size is not counted."""
    state = tmp_path / "state"
    state.mkdir()
    window = state / "user-events-20240701-020000.00112233445566aa.csv"
    window.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n")
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    (state / "user-events-20240701-030000.csv").symlink_to(tmp_path / "big")
    (state / "user-events-20240701-040000.csv").symlink_to(tmp_path / "nowhere")
    status = run_cli("status", "-o", bucket.url, "--state-dir", str(state), "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert (found["committed_files"], found["committed_bytes"], found["newest_committed"]) == (
        1,
        window.stat().st_size,
        window.name,
    )


@on_each_s3_server
def test_status_of_a_running_server_does_not_count_uploaded_windows_as_waiting(bucket, tmp_path):
    server = _serve(bucket, tmp_path)
    # Three windows: two committed (and uploaded), whose local files the last journal record keeps.
    events = [
        {"time": t, "id": i}
        for i, t in enumerate(["2024-07-01T02:00:00Z", "2024-07-01T02:06:00Z", "2024-07-01T02:12:00Z"])
    ]
    assert server.post(ndjson(events)).status_code == 200
    assert wait_for(lambda: len(bucket.objects()) == 2 and _backlog(server)["windows"] == 0)

    def status() -> str:
        result = run_cli("status", "-o", bucket.url, "--state-dir", str(tmp_path / "state"))
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert wait_for(lambda: "waiting for upload: 0 (0 bytes)" in status())  # the uploader's record can lag a moment
    assert "uploaded, kept until the journal moves on: 2" in status()
    assert server.stop() == 0
    assert "waiting for upload: 0 (0 bytes)" in status() and "uploaded, kept" not in status()


@on_each_s3_server
def test_a_window_the_uploader_read_whole_goes_up_whole_in_parts_too(bucket, tmp_path):
    """The uploader reads a window below its read_whole_below at once (for its hash and a PUT);
    a bucket that takes it in parts (its multipart_from is lower) streams it from the file, which
    must then be at its start: the object is the whole window, never an empty one."""
    state = tmp_path / "state"
    state.mkdir()
    window = state / "user-events-20240701-020000.00112233445566aa.csv"
    window.write_bytes(b"2024-07-01T02:00:00Z,,1,false,,,,0\n" * (6 << 20 >> 5))
    expected = window.read_bytes()
    store = S3Bucket(BucketUrl.parse(bucket.url), multipart_from=5 << 20, part_size=5 << 20, environ=bucket.env())
    uploader = Uploader(state, store, UploadReport(Metrics()), read_whole_below=16 << 20)
    uploader.start()
    assert uploader.drain(60)
    uploader.stop()
    assert bucket.objects() == {"user-events-20240701-020000.csv": expected}


@on_each_s3_server
def test_a_stopped_upload_process_never_stalls_ingest(bucket, tmp_path):
    """An upload process that reads nothing (stopped, frozen) while windows keep closing: each
    closed window tells it so, and the server must not wait on it. Requests are answered, and
    once it runs again every window lands, once."""
    rng = random.Random(5)
    events = [
        {"time": f"2024-07-{1 + i // 288:02d}T{i % 288 // 12:02d}:{i % 12 * 5:02d}:00Z", "id": rng.randrange(10**6)}
        for i in range(1500)
    ]  # one window each: every request closes the one before
    server = _serve(bucket, tmp_path, "--drain-timeout", "5m")  # 1500 windows go up at the end
    child = _upload_process(server)
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    try:
        for event in events:
            assert server.client.post("/user/event", content=ndjson([event]), timeout=10).status_code == 200
        assert server.client.get("/healthz", timeout=10).status_code == 200
    finally:
        os.kill(child, signal.SIGCONT)
    assert server.stop() == 0
    assert bucket.objects() == model_files(events)
