"""The suite and the clone stay clean: passing tests keep nothing, the README's runs leave nothing
for git to show."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from paths import ROOT


def test_passing_tests_keep_nothing_in_pytests_temporary_folder(tmp_path):
    (tmp_path / "test_writes.py").write_text(
        "def test_writes(tmp_path):\n    (tmp_path / 'big').write_bytes(b'x' * 1000)\n"
    )
    root = tmp_path / "temproot"
    root.mkdir()
    # This repository's pytest configuration, with pytest's temporary folder moved under tmp_path.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_writes.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DEBUG_TEMPROOT": str(root)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [p for p in root.rglob("*") if not p.is_dir()]
    assert kept == []


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git clone")
def test_the_state_directory_of_the_readmes_bucket_example_is_ignored_by_git():
    # `serve -o s3://… --state-dir ./state`, as the README runs it from the clone.
    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "state/.journal"]).returncode == 0
