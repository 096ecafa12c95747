"""--partition (output/partition.py): a strftime template checked at start, so that no window's
file can land outside the output whatever its time; and the usage errors of serve's new options."""

from __future__ import annotations

import pytest

from batched_event_api.output.partition import Partition
from servers import run_cli


@pytest.mark.parametrize(
    ("template", "stem", "prefix"),
    [
        ("dt=%Y-%m-%d/hour=%H", "user-events-20240701-020000", "dt=2024-07-01/hour=02/"),
        ("dt=%Y-%m-%d", "user-events-16771224-000000", "dt=1677-12-24/"),
        ("year=%Y/month=%m/day=%d/%H%M", "user-events-22620108-235959", "year=2262/month=01/day=08/2359/"),
        ("%F", "user-events-20241231-235500", "2024-12-31/"),
        ("fixed", "user-events-20240701-020000", "fixed/"),
    ],
)
def test_the_prefix_is_the_template_at_the_windows_start_in_utc(template, stem, prefix):
    assert Partition(template).prefix(stem) == prefix


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("", "empty"),
        ("/dt=%Y", "starts with '/'"),
        ("dt=%Y//hour=%H", "empty part"),
        ("dt=%Y/", "empty part"),
        ("../%Y", "hidden"),
        ("dt=%Y/../x", "hidden"),
        ("..", "hidden"),
        (".dt=%Y", "hidden"),
        ("_tmp/%Y", "hidden"),
        ("dt=%c", "only letters"),  # spaces and colons
        ("%Y %m", "only letters"),
        ("dt=%Y%n", "only letters"),
        ("a\\b", "only letters"),
        ("dt=%Y:%H", "only letters"),
        ("dt=%Y\0", "only letters"),
        ("dt=%", "only letters"),
    ],
)
def test_a_template_that_could_leave_the_output_or_hide_files_is_refused(template, why):
    with pytest.raises(ValueError, match=why):
        Partition(template)


def test_a_stem_that_is_no_windows_is_refused():
    with pytest.raises(ValueError):
        Partition("dt=%Y").prefix("../user-events-20240701-020000")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--partition", "../%Y"], "Invalid value for '--partition'"),
        (["--partition", "/abs/%Y"], "starts with '/'"),
        (["--compress", "snappy"], "snappy does not apply to --format csv, which takes none, gzip, zstd"),
        (["--format", "parquet", "--compress", "snappy", "--state-dir", "{out}"], "must be apart"),
        (["--format", "parquet", "--state-dir", "{out}/state"], "must be apart"),
        (["--partition", "dt=%Y", "--state-dir", "{tmp}"], "must be apart"),
        (["--format", "orc"], "Invalid value for '--format'"),
        # Strict windows that would cross a partition's change: a file's partition must bound its rows.
        (
            ["--align", "interval", "--interval", "7m", "--partition", "dt=%Y-%m-%d/hour=%H"],
            "'dt=%Y-%m-%d/hour=%H' changes every 1h: with --align interval, --interval must divide that (not 7m)",
        ),
        (["--align", "interval", "--interval", "48h", "--partition", "dt=%Y-%m-%d"], "changes every 24h"),
        (["--align", "interval", "--interval", "90s", "--partition", "m=%Y%m%d%H%M"], "changes every 60s"),
    ],
)
def test_serve_refuses_a_bad_format_partition_or_state_directory_before_it_starts(tmp_path, args, said):
    out = tmp_path / "out"
    args = [a.format(out=out, tmp=tmp_path) for a in args]
    done = run_cli("serve", "-o", str(out), "--port", "0", *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert not out.exists()  # nothing made before the usage error


def test_the_state_dir_still_applies_only_to_a_local_output_with_a_finishing_step(tmp_path):
    done = run_cli("serve", "-o", str(tmp_path / "out"), "--port", "0", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2 and "--format parquet or --partition" in done.stderr


@pytest.mark.parametrize(
    ("template", "period"),
    [
        ("dt=%Y-%m-%d/hour=%H", 3600),
        ("dt=%Y-%m-%d", 86_400),
        ("month=%Y-%m", 86_400),  # months, weeks and years change at a midnight UTC
        ("week=%G-%V", 86_400),
        ("minute=%H%M", 60),
        ("second=%H%M%S", 1),
        ("source=web", None),  # no field of time: one partition
        ("zone=%z", None),
    ],
)
def test_a_partitions_period_is_that_of_its_finest_field(template, period):
    assert Partition(template).period_ns() == (None if period is None else period * 1_000_000_000)


@pytest.mark.parametrize("template", ["epoch=%s", "dt=%Y/e=%-s", "e=%010s"])
def test_seconds_since_the_epoch_are_refused_as_strftime_takes_them_in_the_local_time_zone(template):
    """glibc's %s reads the window's start as local time: under another TZ the same window would go
    to another partition (and, retried after a crash, be there twice)."""
    with pytest.raises(ValueError, match="local time zone"):
        Partition(template)


def test_a_literal_percent_s_is_not_taken_for_seconds():
    with pytest.raises(ValueError, match="only letters"):  # '%%s' gives '%s': a '%', refused as such
        Partition("x=%%s")


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("p=" + "x" * 254, "at most 255 bytes"),  # NAME_MAX: every create would fail, retried forever
        ("/".join(["p" * 200] * 5), "at most 960 bytes"),  # with the file's name, past a bucket key's 1,024
    ],
)
def test_a_template_giving_names_too_long_for_a_directory_or_a_key_is_refused(template, why):
    with pytest.raises(ValueError, match=why):
        Partition(template)
