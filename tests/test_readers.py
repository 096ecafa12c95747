"""The README's "Reading the files" recipes, run as written on files the real server wrote from tricky
events, give back exactly what was sent: every row once, strings as they were, nanosecond instants."""

from __future__ import annotations

import random
import re

import pyarrow as pa
import pytest

from batched_event_api.events import timestamps
from model import generate_events, ndjson
from paths import ROOT

COLUMNS = ["time", "uuid", "id", "active", "email", "phone", "description", "credits"]
# Strings that readers turn into missing values, numbers or booleans unless told not to.
HOSTILE = [
    "NA",
    "NULL",
    "null",
    "N/A",
    "NaN",
    "nan",
    "None",
    "#N/A",
    "-",
    "true",
    "FALSE",
    "1e5",
    "007",
    " ",
    '""',
    'a,"b"\r\nc',
    "\n",
    "time",
    "\\N",
]
# The edges of the accepted range, with offsets and nanoseconds.
EDGE_TIMES = [
    "1678-01-01T05:30:00.000000001+05:30",
    "2261-12-31T23:59:59.999999999Z",
    "2262-01-01T04:59:59.999999999+05:00",
    "2024-07-01T02:03:04.000000001-00:00",
]
# What the README says to change under each recipe for files written with --header.
HEADER_EDIT = {
    "duckdb": ("header = false", "header = true"),
    "polars": ("has_header=False", "has_header=True"),
    "pyarrow": ("skip_rows=0", "skip_rows=1"),
    "pandas": ("header=None", "header=0"),
}


def readme_recipes() -> dict[str, str]:
    """The Python blocks of the README's "Reading the files" section, by the library each imports."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Reading the files\n", 1)[1].split("\n## ", 1)[0]
    recipes = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        tool = next(t for t in HEADER_EDIT if re.search(rf"^import {t}\b", block, re.M))
        recipes[tool] = block
    return recipes


def tricky_events(rng: random.Random) -> list[list[dict]]:
    """Requests of generated events (quotes, commas, newlines, offsets, ns), hostile strings and the
    range's edges, over several windows."""
    events = generate_events(rng, 300)
    for i, e in enumerate(events):
        if i % 3 == 0:
            e[rng.choice(["uuid", "email", "phone", "description"])] = rng.choice(HOSTILE)
    edges = [{"time": t, "uuid": s, "description": "edge"} for t, s in zip(EDGE_TIMES, HOSTILE)]
    # One window over 1 MiB, newlines in values across it: pyarrow reads in 1 MiB blocks and, unless
    # told values hold newlines, splits a quoted value between two of them.
    big = [
        {"time": f"2030-01-01T00:00:{i % 60:02d}.{i:09d}Z", "description": 'x\n"y",z\r\n' * rng.randrange(300, 900)}
        for i in range(400)
    ]
    return [events[:100], edges, big, events[100:]]


def sent_row(e: dict) -> tuple:
    credits = e.get("credits")
    return (
        timestamps.parse(e["time"])[0],
        e.get("uuid") or "",
        e.get("id") or 0,
        bool(e.get("active")),
        e.get("email") or "",
        e.get("phone") or "",
        e.get("description") or "",
        repr(0.0 if credits is None else float(credits)),
    )  # repr tells -0.0 from 0.0


def as_arrow(tool: str, events: object) -> pa.Table:
    if tool == "duckdb":
        return events.to_arrow_table()  # type: ignore[attr-defined]
    if tool == "polars":
        return events.to_arrow()  # type: ignore[attr-defined]
    if tool == "pandas":
        return pa.Table.from_pandas(events, preserve_index=False)  # type: ignore[arg-type]
    return events  # type: ignore[return-value]


def read_rows(table: pa.Table) -> list[tuple]:
    assert table.column_names == COLUMNS
    time_type = table.schema.field("time").type
    assert pa.types.is_timestamp(time_type) and time_type.unit == "ns" and time_type.tz in ("UTC", "Etc/UTC")
    assert [table.schema.field(c).type for c in ("id", "active", "credits")] == [pa.int64(), pa.bool_(), pa.float64()]
    times = table.column("time").cast(pa.int64()).to_pylist()
    values = {c: table.column(c).cast(pa.string()).to_pylist() for c in ("uuid", "email", "phone", "description")}
    ids, active, credits = (table.column(c).to_pylist() for c in ("id", "active", "credits"))
    return [
        (
            times[i],
            values["uuid"][i],
            ids[i],
            active[i],
            values["email"][i],
            values["phone"][i],
            values["description"][i],
            repr(credits[i]),
        )
        for i in range(table.num_rows)
    ]


@pytest.fixture(scope="module")
def recipes() -> dict[str, str]:
    return readme_recipes()


def test_the_readme_has_a_recipe_for_each_reader(recipes):
    assert sorted(recipes) == sorted(HEADER_EDIT)
    for tool, (without, _) in HEADER_EDIT.items():
        assert recipes[tool].count(without) == 1, f"the README's --header change for {tool} names no single place"


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
def test_each_readme_recipe_reads_back_exactly_what_was_sent(server_factory, tmp_path, monkeypatch, recipes, header):
    requests = tricky_events(random.Random(20))
    server = server_factory(*(["--header"] if header else []), output=tmp_path / "data")
    for events in requests:
        assert server.post(ndjson(events)).json() == {"accepted": len(events)}
    assert server.stop() == 0
    assert len(list((tmp_path / "data").glob("*.csv"))) > 5  # several files: a per-file mistake shows
    expected = sorted(sent_row(e) for events in requests for e in events)

    monkeypatch.chdir(tmp_path)  # the recipes read data/*.csv, from the directory that holds it
    for tool, recipe in recipes.items():
        if header:
            recipe = recipe.replace(*HEADER_EDIT[tool])
        namespace: dict = {}
        exec(compile(recipe, f"README.md ({tool})", "exec"), namespace)
        assert sorted(read_rows(as_arrow(tool, namespace["events"]))) == expected, tool
