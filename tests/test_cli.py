"""The command line's parts without a server: the options' defaults come from config's one table,
and what `status` and `serve`'s header check count as a finished window is what the writer names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import pytest

from batched_event_api.cli.main import main
from batched_event_api.cli.options import Duration, Size
from batched_event_api.cli.startup import header_mismatch
from batched_event_api.commit.inventory import read_status
from batched_event_api.commit.partfiles import part_name
from batched_event_api.commit.writer import Writer
from batched_event_api.config import DEFAULTS, OUTPUT, SEND_DEFAULTS
from batched_event_api.events.rows import Rows
from writer_setup import POLICY, T0

# Names the earlier rule of `status` (`user-events-` and `.csv` anywhere) took for finished windows,
# none of which the writer ever publishes.
LOOK_ALIKES = [
    "user-events-x.csv",
    "user-events-20240701-020304.csv.tmp",
    "user-events-20240701-020304.csv.gz.part",
    "user-events-20240701-0203.csv",
    "user-events-20240701-020304.backup.csv",
]


def _parameters(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in main.commands[command].params if p.name}


@pytest.mark.parametrize(("command", "table"), [("serve", DEFAULTS), ("send", SEND_DEFAULTS)])
def test_every_option_with_a_table_entry_defaults_to_it(command, table):
    params = _parameters(command)
    ctx = click.Context(main.commands[command])
    read = [name for name in params if hasattr(table, name) and name != "output"]  # -o: the text OUTPUT
    # All but output, bucket and output_directory (from -o and --state-dir).
    assert len(read) == len(fields(table)) - (3 if command == "serve" else 0)
    for name in read:
        assert params[name].type_cast_value(ctx, params[name].default) == getattr(table, name), name
    assert command != "serve" or (params["output"].default, DEFAULTS.output) == (OUTPUT, Path(OUTPUT))


@pytest.mark.parametrize("seconds", [0.25, 1, 5, 30, 60, 90, 120, 300, 3600, 5400, 7200, 604800])
def test_a_duration_reads_back_as_written(seconds):
    assert Duration().convert(Duration.text(seconds), None, None) == seconds


@pytest.mark.parametrize("size", [0, 240, 1000, 1024, 64 * 1024, 5 * 1024 * 1024, 3 << 30, (1 << 30) + 1])
def test_a_size_reads_back_as_written(size):
    assert Size().convert(Size.text(size), None, None) == size


def test_status_counts_only_the_files_the_writer_publishes(tmp_path):
    assert all(name.startswith("user-events-") and ".csv" in name for name in LOOK_ALIKES)  # the old rule's
    for name in [*LOOK_ALIKES, "user-events-20240701-020304.csv", "user-events-20240701-020304-1.csv.gz"]:
        (tmp_path / name).write_bytes(b"x\n")
    (tmp_path / "user-events-20240701-030000.csv").symlink_to(tmp_path / "user-events-x.csv")
    state = read_status(tmp_path)
    assert (state.committed_files, state.committed_bytes) == (2, 4)
    assert state.newest_committed == "user-events-20240701-020304.csv"


def test_the_header_check_judges_the_newest_finished_window_only(tmp_path):
    header = b"time,uuid,id,active,email,phone,description,credits\n"
    window = tmp_path / "user-events-20240701-020304.csv"
    window.write_bytes(b"row\n")
    os.utime(window, ns=(1, 1))
    for name in LOOK_ALIKES:  # newer, with a header row: not windows, so not judged
        (tmp_path / name).write_bytes(header)
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_bytes(header)
    (tmp_path / "user-events-20240701-030000.csv").symlink_to(elsewhere)  # never followed
    assert header_mismatch(tmp_path, header=False) is None
    assert "its newest file, user-events-20240701-020304.csv, has no header row" in str(
        header_mismatch(tmp_path, header=True)
    )


def test_status_neither_hangs_on_a_fifo_nor_follows_a_link_in_the_directory(tmp_path):
    """`status` reads the directory's own files only: a FIFO at the lock or the upload list (which
    an open() would wait on for a writer forever) or a symlink at the journal is not one of them."""
    os.mkfifo(tmp_path / ".lock")
    os.mkfifo(tmp_path / ".uploaded")
    (tmp_path / "user-events-20240701-020304.csv").write_bytes(b"x\n")
    status = [sys.executable, "-m", "batched_event_api", "status", "-o", str(tmp_path), "--json"]
    done = subprocess.run(status, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["committed_files"] == 1
    elsewhere = tmp_path.parent / "elsewhere"
    elsewhere.write_bytes(b"not a journal of this directory\n")
    (tmp_path / ".journal").symlink_to(elsewhere)
    done = subprocess.run(status, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "not a regular file" in done.stderr and not done.stdout
    os.unlink(tmp_path / ".journal")
    os.mkfifo(tmp_path / ".journal")
    done = subprocess.run(status, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "not a regular file" in done.stderr


def test_status_does_not_follow_a_link_at_the_open_windows_part_file(tmp_path):
    """A symlink at the open window's part name is not the window's file: `status` does not take
    the age of whatever it points to."""
    writer = Writer(tmp_path / "out", POLICY, fsync=False)
    writer.start()
    writer.apply([T0], Rows.from_lines(["x"]))
    assert writer.open is not None
    part = tmp_path / "out" / part_name(writer.open.name)
    writer.close()
    old = tmp_path / "old"
    old.write_bytes(b"x\n")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # 2001
    part.unlink()
    part.symlink_to(old)
    state = read_status(tmp_path / "out", now=1_000_010_000)
    assert state.open is not None and state.open.idle_seconds == 0.0


def test_a_newest_window_that_cannot_be_read_stops_serve_with_one_line(tmp_path):
    """The header check cannot judge a newest file it cannot read (not gzip under a .csv.gz name,
    truncated, another user's): `serve` says so in one line, not a traceback."""
    (tmp_path / "user-events-20240701-020304.csv.gz").write_bytes(b"not gzip\n")
    assert "user-events-20240701-020304.csv.gz, cannot be read" in str(header_mismatch(tmp_path, header=False))
    serve = [sys.executable, "-m", "batched_event_api", "serve", "-o", str(tmp_path), "--port", "0"]
    done = subprocess.run(serve, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: cannot serve from {tmp_path}: its newest file")
