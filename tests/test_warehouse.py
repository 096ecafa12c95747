"""Files a warehouse takes as they are (issue 22), end to end through the real server: --partition
and --format parquet, in a local directory and in a bucket, read back by DuckDB, Polars, pyarrow
and pandas with no options but the path; SIGKILL of the server and of the finish process during a
conversion; a link planted at a partition directory; status while windows wait."""

from __future__ import annotations

import collections
import csv
import io
import os
import random
import re
import signal
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batched_event_api.events import timestamps
from model import generate_events, model_files, ndjson
from paths import ROOT
from polling import wait_for
from s3store import KEY_ID, S3_SERVERS, SECRET, Bucket
from servers import Server, post_maybe_killed, run_cli

TEMPLATE = "dt=%Y-%m-%d/hour=%H"
COLUMNS = ("time", "time_offset_minutes", "uuid", "id", "active", "email", "phone", "description", "credits")
Row = tuple  # (ns, offset minutes, uuid, id, active, email, phone, description, credits' bits)


def _row(ns: int, offset: int, uuid: str, ident: int, active: bool, email: str, phone: str, description: str,
         credits: float) -> Row:  # fmt: skip
    """A row as compared: plain Python values, the float by its bits (-0.0 is not 0.0)."""
    return (int(ns), int(offset), str(uuid), int(ident), bool(active), str(email), str(phone), str(description),
            struct.pack("<d", float(credits)))  # fmt: skip


def _typed(record: list[str]) -> Row:
    """A CSV record of the model as the Parquet row that must hold the same values."""
    time_text, uuid, ident, active, email, phone, description, credits = record
    ns, _ = timestamps.parse(time_text)
    zone = time_text[-6:]
    offset = 0 if time_text.endswith("Z") else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[4:6]))
    return _row(ns, offset, uuid, int(ident), active == "true", email, phone, description, float(credits))


def _stem(name: str) -> str:
    """`user-events-YYYYMMDD-HHMMSS` of a file name (its -N and suffix dropped)."""
    return name[: len("user-events-YYYYMMDD-HHMMSS")]


def _prefix(stem: str) -> str:
    start = datetime.strptime(stem.removeprefix("user-events-"), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    return start.strftime(TEMPLATE) + "/"


def model_rows(events: list[dict]) -> dict[str, collections.Counter]:
    """What each window holds (by its stem: windows of one stem share a partition), from the model."""
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, data in model_files(events).items():
        rows[_stem(name)].update(_typed(r) for r in csv.reader(io.StringIO(data.decode(), newline="")))
    return dict(rows)


def model_csv(events: list[dict]) -> dict[str, collections.Counter]:
    """The model's CSV files, by where they go under the template (their -N may differ)."""
    files: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, data in model_files(events).items():
        files[_prefix(_stem(name)) + _stem(name)][data] += 1
    return dict(files)


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _hidden(directory: Path) -> list[str]:
    """Hidden entries anywhere under `directory` (temporary files a crash could leave)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*"))


def parquet_rows_by_stem(directory: Path) -> dict[str, collections.Counter]:
    """Each Parquet file's rows, read with pyarrow.parquet, by its stem; each file where the
    template puts it."""
    import pyarrow.parquet as pq

    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in _visible(directory):
        relative = str(path.relative_to(directory))
        assert path.suffix == ".parquet", relative
        stem = _stem(path.name)
        assert relative == _prefix(stem) + path.name
        table = pq.read_table(path)
        assert table.schema.names == list(COLUMNS)
        rows[stem].update(_arrow_rows(table))
    return dict(rows)


def _arrow_rows(table) -> list[Row]:
    import pyarrow as pa

    columns = [table.column(name) for name in COLUMNS]
    columns[0] = columns[0].cast(pa.int64())  # the instant, in nanoseconds since the epoch
    return [_row(*values) for values in zip(*(c.to_pylist() for c in columns))]


def read_by_every_reader(directory: Path) -> dict[str, collections.Counter]:
    """Every row as DuckDB, Polars, pyarrow.dataset and pandas read the directory, each given
    only the path (and hive partitioning where it is not its default)."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    found = {}
    query = f"SELECT epoch_ns(time), {', '.join(COLUMNS[1:])} FROM read_parquet('{directory}/**/*.parquet', hive_partitioning = true)"
    found["duckdb"] = collections.Counter(_row(*r) for r in duckdb.sql(query).fetchall())
    frame = pl.scan_parquet(f"{directory}/**/*.parquet", hive_partitioning=True).collect()
    assert {"dt", "hour"} <= set(frame.columns)  # the partition's columns, from the path
    frame = frame.with_columns(pl.col("time").dt.epoch("ns"))
    found["polars"] = collections.Counter(_row(*r) for r in frame.select(COLUMNS).rows())
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    assert {"dt", "hour"} <= set(dataset.schema.names)
    found["pyarrow.dataset"] = collections.Counter(_arrow_rows(dataset.to_table()))
    df = pd.read_parquet(directory)
    df["time"] = df["time"].map(lambda t: t.value)  # a pandas Timestamp's nanoseconds
    found["pandas"] = collections.Counter(_row(*r) for r in df[list(COLUMNS)].itertuples(index=False))
    return found


def _bodies(events: list[dict], rng: random.Random, sizes: tuple[int, ...] = (1, 20, 100, 200)) -> list[bytes]:
    bodies, i = [], 0
    while i < len(events):
        n = rng.choice(sizes)
        bodies.append(ndjson(events[i : i + n]))
        i += n
    return bodies


def _serve(tmp_path: Path, *args: str, output: str = "out") -> Server:
    return Server(tmp_path / output, "--state-dir", str(tmp_path / "state"), *args, log_dir=tmp_path).start()


def readme_recipes() -> dict[str, str]:
    """The Python blocks of the README's "For warehouses" section, by the library each imports."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## For warehouses: Parquet and partitions\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return {
        "S3FileSystem" if "S3FileSystem" in block else re.search(r"import ([\w.]+)", block)[1]: block  # type: ignore[index]
        for block in blocks
    }


def pq_dataset(directory: Path):
    import pyarrow.dataset as ds

    return ds.dataset(directory, format="parquet", partitioning="hive").to_table()


def _as_arrow(events):
    """What a recipe's `events` is, as an Arrow table."""
    import pyarrow as pa

    if hasattr(events, "to_arrow_table"):  # DuckDB's relation
        return events.to_arrow_table()
    if hasattr(events, "to_arrow"):  # Polars
        return events.to_arrow()
    if isinstance(events, pa.Table):
        return events
    return pa.Table.from_pandas(events)


def test_a_local_partition_of_csv_puts_each_file_where_the_template_says_byte_identical(tmp_path):
    rng = random.Random(22)
    events = generate_events(rng, 1500)
    old = os.umask(0o022)  # the server inherits it: the modes below are before it
    try:
        server = _serve(tmp_path, "--partition", TEMPLATE, "--group-readable")
    finally:
        os.umask(old)
    for body in _bodies(events, rng):
        assert server.post(body).status_code == 200
    assert server.stop() == 0  # commits the open window and waits for the finish stage
    files: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in _visible(tmp_path / "out"):
        relative = str(path.relative_to(tmp_path / "out"))
        assert relative.startswith(_prefix(_stem(path.name))) and path.name.endswith(".csv")
        files[_prefix(_stem(path.name)) + _stem(path.name)][path.read_bytes()] += 1
    assert len(files) > 3  # several partitions
    assert dict(files) == model_csv(events)
    assert _hidden(tmp_path / "out") == []
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*")}
    assert modes == {0o640, 0o750}  # --group-readable: the partitions' directories too
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [".journal", ".lock"]


def test_local_parquet_with_a_partition_is_read_back_exactly_by_every_reader(tmp_path, monkeypatch):
    rng = random.Random(2022)
    events = generate_events(rng, 2000)
    server = _serve(tmp_path, "--format", "parquet", "--partition", TEMPLATE, output="data")
    for body in _bodies(events, rng):
        assert server.post(body).status_code == 200
    assert server.stop() == 0
    out = tmp_path / "data"
    expected = model_rows(events)
    assert parquet_rows_by_stem(out) == expected
    everything = sum(expected.values(), collections.Counter())
    for reader, rows in read_by_every_reader(out).items():
        assert rows == everything, reader
    # The README's recipes, as written, from the directory that holds data/.
    monkeypatch.chdir(tmp_path)
    recipes = readme_recipes()
    assert sorted(recipes) == ["S3FileSystem", "duckdb", "pandas", "polars", "pyarrow.dataset"]
    del recipes["S3FileSystem"]  # a bucket's: test_parquet_in_a_bucket_…
    for library, recipe in recipes.items():
        scope: dict = {}
        exec(recipe, scope)
        table = _as_arrow(scope["events"])
        assert {"dt", "hour"} <= set(table.column_names), library
        assert collections.Counter(_arrow_rows(table)) == everything, library
    assert _hidden(out) == []  # no temporary file left visible, or at all
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [".journal", ".lock"]
    # Owner-only, directories too.
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*")} == {"0o600", "0o700"}


def test_under_align_interval_each_files_name_and_partition_bound_every_row_in_it(tmp_path):
    """Strict windows: every row of a file lies in [its name's start, + the interval), and in the
    hour its partition names, late events (each in a file of its own window, -N) included."""
    rng = random.Random(5)
    events = generate_events(rng, 1500)
    rng.shuffle(events)  # late events, to windows open and to windows committed already
    server = _serve(tmp_path, "--format", "parquet", "--partition", TEMPLATE, "--align", "interval")
    for body in _bodies(events, rng):
        assert server.post(body).status_code == 200
    assert server.stop() == 0
    import duckdb

    rows = duckdb.sql(
        "SELECT filename, epoch_ns(time), dt, hour FROM "
        f"read_parquet('{tmp_path / 'out'}/**/*.parquet', hive_partitioning = true, filename = true)"
    ).fetchall()
    assert len(rows) == len(events)
    everything = sum(model_rows(events).values(), collections.Counter())  # every row once, wherever
    assert collections.Counter(_arrow_rows(_as_arrow(pq_dataset(tmp_path / "out")))) == everything
    interval = 300 * 10**9
    for filename, ns, dt, hour in rows:
        stem = _stem(Path(filename).name)
        start, _ = timestamps.parse(datetime.strptime(stem[12:], "%Y%m%d-%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert start <= ns < start + interval, filename
        instant = datetime.fromtimestamp(ns // 10**9, UTC)
        assert (str(dt), int(hour)) == (instant.strftime("%Y-%m-%d"), instant.hour), filename


@pytest.mark.parametrize("s3", S3_SERVERS, indirect=True)
def test_parquet_in_a_bucket_under_the_partition_is_read_back_through_pyarrows_s3_filesystem(
    bucket: Bucket, tmp_path, monkeypatch
):
    import pyarrow.dataset as ds
    from pyarrow import fs

    rng = random.Random(7)
    events = generate_events(rng, 800)
    server = Server(
        bucket.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--format",
        "parquet",
        "--partition",
        TEMPLATE,
        env=bucket.env(),
        log_dir=tmp_path,
    ).start()
    for body in _bodies(events, rng):
        assert server.post(body).status_code == 200
    assert server.stop() == 0
    names = bucket.names()
    assert names and all(name == _prefix(_stem(name.rpartition("/")[2])) + name.rpartition("/")[2] for name in names)
    assert all(name.endswith(".parquet") for name in names)
    assert bucket.head(names[0])["ContentType"] == "application/vnd.apache.parquet"
    host = bucket.endpoint.removeprefix("http://")
    s3 = fs.S3FileSystem(
        access_key=KEY_ID, secret_key=SECRET, endpoint_override=host, scheme="http", region="us-east-1"
    )
    dataset = ds.dataset(f"{bucket.name}/{bucket.prefix}", filesystem=s3, format="parquet", partitioning="hive")
    assert {"dt", "hour"} <= set(dataset.schema.names)
    assert collections.Counter(_arrow_rows(dataset.to_table())) == sum(
        model_rows(events).values(), collections.Counter()
    )
    # The README's recipe, as written but for the bucket's name, with the server's environment.
    for name, value in bucket.env().items():
        monkeypatch.setenv(name, value)
    scope: dict = {}
    exec(readme_recipes()["S3FileSystem"].replace("my-bucket/raw/events", f"{bucket.name}/{bucket.prefix}"), scope)
    assert collections.Counter(_arrow_rows(scope["events"])) == sum(model_rows(events).values(), collections.Counter())
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [".journal", ".lock"]


def test_sigkill_of_the_server_at_any_point_leaves_each_window_once_in_parquet(tmp_path):
    rng = random.Random(11)
    events = generate_events(rng, 2000)
    bodies = _bodies(events, rng, (1, 10, 50, 100))
    args = ("--format", "parquet", "--partition", TEMPLATE, "--drain-timeout", "120s")
    server = _serve(tmp_path, *args)
    kills, index, waiting = 0, 0, 0
    try:
        while index < len(bodies):
            response, killed = post_maybe_killed(server, bodies[index], f"req-{index}", rng, within=0.02)
            if response is not None:
                assert response.status_code == 200, response.text
                index += 1
            if server.proc.poll() is not None or killed:  # type: ignore[union-attr]
                waiting += any(not p.name.startswith(".") for p in (tmp_path / "state").iterdir())
                server.kill()
                kills += 1
                server = _serve(tmp_path, *args)  # the same state: recover, finish what was under way
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:  # type: ignore[union-attr]
            server.kill()
    assert kills >= 5 and waiting >= 1  # some with windows on their way
    assert parquet_rows_by_stem(tmp_path / "out") == model_rows(events)
    assert _hidden(tmp_path / "out") == []


def _finish_process(server: Server) -> int:
    """The pid of the server's finish (upload) process."""
    pid = server.proc.pid  # type: ignore[union-attr]
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in open(f"/proc/{pid}/task/{task}/children").read().split():
            if b"batched_event_api.output.child" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise AssertionError("no finish process")


def _big_window(hour: int, n: int) -> bytes:
    """`n` events in one window starting at 2024-07-01 `hour`:00."""
    return "".join(
        f'{{"time":"2024-07-01T{hour:02d}:00:{i % 60:02d}.{i:09d}Z","uuid":"u{i}","id":{i},"active":true,'
        f'"email":"e{i}@x","phone":"","description":"d,{i}","credits":{i}.5}}\n'
        for i in range(n)
    ).encode()


def test_sigkill_of_the_finish_process_during_a_conversion_loses_nothing_and_leaves_no_half_file(tmp_path):
    server = _serve(tmp_path, "--format", "parquet", "--partition", TEMPLATE, "--idle-close", "1s")
    state, out = tmp_path / "state", tmp_path / "out"
    sent: dict[int, bytes] = {}
    try:
        for hour in range(1, 10):  # until a kill lands while a conversion is under way
            sent[hour] = _big_window(hour, 150_000)
            assert server.post(sent[hour]).status_code == 200
            child = _finish_process(server)

            def converting() -> bool:
                return any(name.endswith(".parquet.tmp") for name in os.listdir(state))

            landed = out / f"dt=2024-07-01/hour={hour:02d}/user-events-20240701-{hour:02d}0000.parquet"
            assert wait_for(lambda: converting() or landed.exists(), timeout=120)  # noqa: B023
            os.kill(child, signal.SIGSTOP)
            if converting():
                os.kill(child, signal.SIGKILL)
                break
            os.kill(child, signal.SIGCONT)
        else:
            pytest.fail("no kill landed during a conversion")
        # Another finish process starts, removes the half conversion, converts the window again.
        assert wait_for(lambda: "a conversion cut short" in server.log.read_text(), timeout=60)
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:  # type: ignore[union-attr]
            server.kill()
    for hour, body in sent.items():
        files = _visible(out / f"dt=2024-07-01/hour={hour:02d}")
        assert [p.name for p in files] == [f"user-events-20240701-{hour:02d}0000.parquet"]  # once
        import pyarrow.parquet as pq

        assert pq.read_table(files[0]).column("id").to_pylist() == list(range(body.count(b"\n")))
    assert _hidden(out) == [] and sorted(p.name for p in state.iterdir()) == [".journal", ".lock"]


def test_a_symlink_at_a_partition_directory_is_not_followed_and_the_window_waits_in_status(tmp_path):
    """The window waits in the state directory, counted: /readyz's backlog, status, --max-backlog
    (a request beyond it is answered 503), a shutdown's drain gives up after --drain-timeout; once
    the link is gone, the next start puts it in the partition."""
    out, state, elsewhere = tmp_path / "out", tmp_path / "state", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "dt=2024-07-01").symlink_to(elsewhere)
    args = ("--partition", TEMPLATE, "--idle-close", "1s", "--max-backlog", "1", "--drain-timeout", "1s")
    server = _serve(tmp_path, *args)
    try:
        body = b'{"time":"2024-07-01T02:00:00Z","id":1}\n'
        assert server.post(body).status_code == 200
        assert wait_for(lambda: "not followed" in server.log.read_text(), timeout=60)
        assert server.client.get("/readyz").json()["backlog"]["windows"] == 1  # type: ignore[union-attr]
        refused = server.post(b'{"time":"2024-07-01T02:01:00Z","id":2}\n')
        assert refused.status_code == 503 and "retry-after" in refused.headers
        status = run_cli("status", "-o", str(out), "--state-dir", str(state), "--partition", TEMPLATE)
        assert status.returncode == 0, status.stderr
        assert "waiting for output: 1 (" in status.stdout
        assert server.stop() == 0
        assert "not uploaded within --drain-timeout" in server.log.read_text()
        assert list(elsewhere.iterdir()) == []  # nothing went through the link
        (out / "dt=2024-07-01").unlink()  # its owner removes it: the window goes on at the next start
        server = _serve(tmp_path, *args)
        landed = out / "dt=2024-07-01/hour=02/user-events-20240701-020000.csv"
        assert wait_for(landed.exists, timeout=60)
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:  # type: ignore[union-attr]
            server.kill()
    assert landed.read_bytes() == b"2024-07-01T02:00:00Z,,1,false,,,,0\n"
    assert list(elsewhere.iterdir()) == []


def test_an_output_a_direct_run_left_an_open_window_in_is_refused_until_it_is_committed(tmp_path):
    """A server that wrote plain CSV into the directory left acknowledged events there (its open
    window): a finish stage would never commit them, so serving it with --format parquet is
    refused, with what to do, until a plain run has committed them."""
    out = tmp_path / "out"
    direct = Server(out, log_dir=tmp_path).start()
    assert direct.post(b'{"time":"2024-07-01T02:00:00Z","id":1}\n').status_code == 200
    direct.kill()  # the open window stays, in progress
    done = run_cli(
        "serve", "-o", str(out), "--port", "0", "--state-dir", str(tmp_path / "state"), "--format", "parquet"
    )
    assert done.returncode == 1 and "serve it once without --format parquet and --partition" in done.stderr
    direct = Server(out, log_dir=tmp_path).start()
    assert direct.stop() == 0  # commits it
    finishing = _serve(tmp_path, "--format", "parquet")
    assert finishing.stop() == 0
    assert [p.name for p in _visible(out)] == ["user-events-20240701-020000.csv"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (("--partition", "dt=%Y-%m-%d"), ("--partition", "day=%Y%m%d")),
        (("--partition", "dt=%Y-%m-%d"), ("--partition", "dt=%Y-%m-%d", "--format", "parquet")),
    ],
)
def test_a_restart_with_another_partition_or_format_never_puts_a_window_in_twice(tmp_path, before, after):
    """Killed after a window went into the output but before its CSV left the state directory
    (the journal still pins it): under another --partition or --format the next start would put
    it in a second time, at another path. It refuses, saying what to do; served as before, the
    window is recognised and released; then the new layout starts."""
    out, state = tmp_path / "out", tmp_path / "state"
    server = _serve(tmp_path, *before)
    assert server.post(b'{"time":"2024-07-01T02:00:00Z","id":1}\n').status_code == 200
    assert server.post(b'{"time":"2024-07-01T02:06:00Z","id":2}\n').status_code == 200  # commits the first
    assert wait_for(lambda: list(out.rglob("user-events-20240701-020000.csv")), timeout=60)
    server.kill()
    assert [p.name for p in state.glob("user-events-*.csv")]  # uploaded, not yet released
    refused = run_cli("serve", "-o", str(out), "--port", "0", "--state-dir", str(state), *after)
    assert refused.returncode == 1
    assert "serve it with those until they are out" in refused.stderr, refused.stderr
    server = _serve(tmp_path, *before)
    assert server.stop() == 0  # drains: the window is its own earlier create, the open one goes in
    assert list(state.glob("user-events-*")) == []
    server = _serve(tmp_path, *after)
    assert server.stop() == 0
    files = sorted(str(p.relative_to(out)) for p in _visible(out))
    assert files == ["dt=2024-07-01/user-events-20240701-020000.csv", "dt=2024-07-01/user-events-20240701-020600.csv"]


def test_a_window_waiting_without_a_header_row_is_not_left_unconvertible_by_a_restart_with_header(tmp_path):
    """A window waits in the state directory, written without a header row; a start with --header
    would take it for damaged (no header line) and leave it there for good. It refuses instead."""
    out, state = tmp_path / "out", tmp_path / "state"
    out.mkdir()
    (out / "dt=2024-07-01").symlink_to(tmp_path)  # the window waits while it is there
    args = ("--format", "parquet", "--partition", "dt=%Y-%m-%d", "--drain-timeout", "1s")
    server = _serve(tmp_path, *args)
    assert server.post(b'{"time":"2024-07-01T02:00:00Z","id":1}\n').status_code == 200
    assert server.stop() == 0
    (out / "dt=2024-07-01").unlink()
    refused = run_cli("serve", "-o", str(out), "--port", "0", "--state-dir", str(state), *args, "--header")
    assert refused.returncode == 1 and "serve it with those until they are out" in refused.stderr, refused.stderr
    server = _serve(tmp_path, *args)
    assert server.stop() == 0
    assert [str(p.relative_to(out)) for p in _visible(out)] == ["dt=2024-07-01/user-events-20240701-020000.parquet"]


@pytest.mark.xfail(
    strict=True,
    reason="a finishing CSV output is not checked for --header as a plain one is (header_mismatch looks at the "
    "output's top level only, and a finishing server's -o is its store): it needs the newest file under the "
    "partitions, or a record in the output",
)
def test_a_partitioned_csv_output_refuses_a_header_row_it_has_no_files_with(tmp_path):
    """A plain output refuses --header when its files have none (readers of *.csv would trip on
    one directory of both kinds); a partitioned one takes them side by side."""
    args = ("--partition", "dt=%Y-%m-%d")
    server = _serve(tmp_path, *args)
    assert server.post(b'{"time":"2024-07-01T02:00:00Z","id":1}\n').status_code == 200
    assert server.stop() == 0
    with pytest.raises(RuntimeError, match="--header"):  # Server.start: the server exited, saying why
        server = _serve(tmp_path, *args, "--header")
        server.stop()


def test_two_servers_with_their_own_state_on_one_output_put_every_window_in_once(tmp_path):
    """Two finish stages create in the same partitions at once: the second window of a stem takes
    the next -N name, no file is replaced or lost, none is left half written."""
    rng = random.Random(7)
    events = generate_events(rng, 600)
    halves = [events, events]  # the same windows, under the same names, on both
    args = ("--format", "parquet", "--partition", TEMPLATE)
    servers = [
        Server(tmp_path / "out", "--state-dir", str(tmp_path / f"state{i}"), *args, log_dir=tmp_path).start()
        for i in range(2)
    ]
    try:
        bodies = [_bodies(events, rng, (1, 20, 50)) for events in halves]
        for i in range(max(map(len, bodies))):
            for server, own in zip(servers, bodies, strict=True):
                if i < len(own):
                    assert server.post(own[i]).status_code == 200
        for server in servers:
            assert server.stop() == 0
    finally:
        for server in servers:
            if server.proc.poll() is None:  # type: ignore[union-attr]
                server.kill()
    expected: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for events in halves:
        for stem, rows in model_rows(events).items():
            expected[stem].update(rows)
    assert parquet_rows_by_stem(tmp_path / "out") == dict(expected)
    assert any(re.search(r"-\d{6}-1\.parquet$", p.name) for p in _visible(tmp_path / "out"))  # stems met
    assert _hidden(tmp_path / "out") == []
