"""What the commands' options have in common: the value types (sizes, durations, named choices),
the environment variable of each option, defaults read from config's table and shown as an
operator writes them, and the output directory or bucket that -o and --state-dir name."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from batched_event_api.config import DEFAULTS, SEND_DEFAULTS, STATE_DIR, BucketUrl, GiB, KiB, MiB

F = TypeVar("F", bound=Callable[..., Any])

_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": KiB,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GiB,
}
_DURATION = re.compile(r"(?:[0-9]*\.?[0-9]+(?:ms|s|m|h))+|[0-9]*\.?[0-9]+")  # 300, 5m, 1h30m, 1m30.5s
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ms|s|m|h)?")
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Size(click.ParamType):
    name = "BYTES"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        m = _SIZE.fullmatch(str(value))
        unit = (m.group(2) or "").lower() if m else ""
        if m is None or unit not in _SIZE_UNITS:
            self.fail(f"{value!r} is not a size like 1048576, 64MiB or 10MB", param, ctx)
        return int(m.group(1)) * _SIZE_UNITS[unit]

    @staticmethod
    def text(size: int) -> str:
        """As written on the command line: 64MiB, 240."""
        for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
            if size and size % factor == 0:
                return f"{size // factor}{unit}"
        return str(size)


class Duration(click.ParamType):
    name = "DURATION"

    def __init__(self, within: tuple[float, float, str] | None = None, *, zero: bool = False) -> None:
        self.within = within  # (least, most, how the bounds are said), when there are bounds
        self.zero = zero  # 0 (none at all) is a valid value

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().replace(" ", "")
        if _DURATION.fullmatch(text) is None:
            self.fail(f"{value!r} is not a duration like 300, 300s, 5m, 1h30m or 250ms", param, ctx)
        seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        if seconds < 0 or (seconds == 0 and not self.zero):
            self.fail("must be greater than zero", param, ctx)
        if self.within is not None and not self.within[0] <= seconds <= self.within[1]:
            self.fail(f"{value!r} is not {self.within[2]}", param, ctx)
        return seconds

    @staticmethod
    def text(seconds: float) -> str:
        """As written on the command line: whole hours in h, whole minutes past the first in m, the
        rest in s (1h, 5m, 60s, 0.25s, 0s)."""
        if seconds % 3600 == 0 and seconds:
            return f"{seconds / 3600:g}h"
        if seconds % 60 == 0 and seconds > 60:
            return f"{seconds / 60:g}m"
        return f"{seconds:g}s"


class Named(click.Choice):
    """One of a few words, each standing for a value (`always` for True, `interval` for
    Align.INTERVAL): the command takes the value, the help lists the words."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(list(values))
        self.values = dict(values)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return self.values[super().convert(value, param, ctx)]

    def text(self, value: Any) -> str:
        return next(word for word, meant in self.values.items() if meant == value)


class EnvOption(click.Option):
    """An option with an environment variable; an error names the variable only when the value
    came from it (click names it whenever one is configured)."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = click.Parameter.get_error_hint(self, ctx)
        if ctx is not None and ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT:
            hint += f" (from the environment variable {self.envvar})"
        return hint


_FROM_TABLE = object()


def option(
    defaults: object, *decls: str, default: Any = _FROM_TABLE, envvar: str | None = None, **attrs: Any
) -> Callable[[F], F]:
    """An option with the environment variable BEA_<NAME> (or BEA_`envvar`) whose default, unless
    given, is the attribute of `defaults` (config's table) of its parameter's name, shown as an
    operator writes it (`--max-body` shows DEFAULTS.max_body as 64MiB)."""
    name = _parameter_name(decls)
    if default is _FROM_TABLE:
        value = getattr(defaults, name)
        text = getattr(attrs.get("type"), "text", None)
        default = text(value) if text is not None and value is not None else value
    variable = f"BEA_{envvar or name.upper()}"
    return click.option(*decls, default=default, envvar=variable, show_envvar=True, cls=EnvOption, **attrs)


def setting(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """An option of `serve` (or `status`): a field of Settings, of the same name and default."""
    return option(DEFAULTS, *decls, **attrs)


def send_setting(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """An option of `send`: a field of SendSettings, of the same name and default."""
    return option(SEND_DEFAULTS, *decls, **attrs)


def _parameter_name(decls: tuple[str, ...]) -> str:
    """The parameter's name as click makes it: the one given, else the first long option's."""
    given = [d for d in decls if d.isidentifier()]
    if given:
        return given[0]
    long = next(d for d in decls if d.startswith("--"))
    return long.split("/")[0].removeprefix("--").replace("-", "_")


def directory_and_store(
    output: str, state_dir: Path | None, *, finishing: bool
) -> tuple[Path, BucketUrl | None, Path | None]:
    """From -o and --state-dir: the directory a server writes (the output, or the state directory
    of a store), the bucket, and the local output directory a finish stage puts windows in
    (`finishing`: Parquet, a partition). A local output without a finishing step keeps its
    journal beside its files."""
    if output.startswith("s3://"):
        try:
            return state_dir or Path(STATE_DIR), BucketUrl.parse(output), None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--output'") from None
    if not finishing:
        if state_dir is not None and state_dir.resolve() != Path(output).resolve():
            raise click.BadParameter(
                "applies to an s3:// output, or a local one with --format parquet or --partition: a plain "
                "local output directory keeps its journal beside its files",
                param_hint="'--state-dir'",
            )
        return Path(output), None, None
    state = state_dir or Path(STATE_DIR)
    here, there = state.resolve(), Path(output).resolve()
    if here.is_relative_to(there) or there.is_relative_to(here):
        raise click.BadParameter(
            f"{state} and the output directory {output} must be apart (neither inside the other): the state "
            "directory holds the journal and the windows on their way",
            param_hint="'--state-dir'",
        )
    return state, None, Path(output)
