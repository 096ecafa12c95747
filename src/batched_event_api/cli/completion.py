"""Shell completion scripts that call this program by its absolute path instead of by the name
the shell saw (bash's $1) or by `batched-event-api`: the name is on PATH only in an active venv,
so TAB elsewhere ran `env: 'batched-event-api': No such file`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from click.shell_completion import BashComplete, FishComplete, ShellComplete, ZshComplete, add_completion_class


def _program_path() -> str | None:
    """This command's absolute path as run (`.venv/bin/batched-event-api`), or None under
    `python -m` (where argv[0] is a path to __main__.py)."""
    return os.path.abspath(sys.argv[0]) if Path(sys.argv[0]).name == "batched-event-api" else None


def _by_path(template: str, call: str, fallback: str) -> str:
    """click's script `template` with the program in `call` (named `fallback` there) left to
    %(program)s."""
    return template.replace(call, call.replace(fallback, "%(program)s"))


class _ByPath(ShellComplete):
    fallback: str  # how click's script names the program

    def source_vars(self) -> Any:
        program = _program_path()
        vars = super().source_vars()
        return {**vars, "program": shlex.quote(program) if program else self.fallback % vars}


class BashByPath(_ByPath, BashComplete):
    fallback = "$1"
    source_template = _by_path(BashComplete.source_template, "=bash_complete $1)", fallback)


class ZshByPath(_ByPath, ZshComplete):
    fallback = "%(prog_name)s"
    source_template = _by_path(ZshComplete.source_template, "=zsh_complete %(prog_name)s)", fallback)


class FishByPath(_ByPath, FishComplete):
    fallback = "%(prog_name)s"
    source_template = _by_path(FishComplete.source_template, "(commandline -t) %(prog_name)s)", fallback)


def register() -> None:
    """Use these scripts instead of click's own for bash, zsh and fish."""
    for by_path in (BashByPath, ZshByPath, FishByPath):
        add_completion_class(by_path)
