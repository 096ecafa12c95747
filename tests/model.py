"""An independent, plain model of the SPEC (windows, names, rows) and a generator of tricky events,
shared by the end-to-end tests."""

from __future__ import annotations

import json
import random

from batched_event_api.events import timestamps
from batched_event_api.events.render import csv_record, go_float

SECOND = 10**9
MINUTE = 60 * SECOND
INTERVAL = 5 * MINUTE  # the SPEC's window
STRINGS = [
    "",
    "plain",
    "a,b",
    'say "hi"',
    "line\nbreak",
    "crlf\r\nx",
    " leading",
    "\tTab",
    "\u00a0nbsp",
    "\u2028ls",
    "\u3000ideo",
    "\\.",
    "\\.x",
    "ünïcödé 😀",
    "\u200bzwsp",
    "\x1cfs",
    "trailing ",
    '"',
    ",",
]
FLOATS = [
    0.0,
    -0.0,
    1e21,
    1e-7,
    5e-324,
    1.7976931348623157e308,
    -2.2250738585072014e-308,
    100.0,
    0.1,
    123456789.123456789,
    1.2345678901234568e17,
    -95925802.95830855,
]
IDS = [0, -1, 2**63 - 1, -(2**63), 5811804537417038826]
OFFSETS = ["Z", "+00:00", "-00:00", "+05:30", "-03:30", "+05:45", "+14:00", "-12:00", "+23:59"]


def time_text(ns: int, rng: random.Random) -> str:
    """An RFC 3339 rendering of the instant in a random offset, with a random fraction length."""
    zone = rng.choice(OFFSETS)
    offset = (
        0
        if zone in ("Z", "+00:00", "-00:00")
        else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
    )
    local = ns + offset * 10**9
    seconds, nanos = divmod(local, 10**9)
    days, rest = divmod(seconds, 86400)
    y, m, d = timestamps.civil_from_days(days)
    digits = rng.choice([0, 3, 6, 9, 9, 12])
    frac = f"{nanos:09d}".ljust(digits, "0")[:digits] if digits else ""
    if digits < 9 and frac.ljust(9, "0") != f"{nanos:09d}":
        frac = f"{nanos:09d}"  # never lose precision the model relies on
    return (
        f"{y:04d}-{m:02d}-{d:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
        + (f".{frac}" if frac else "")
        + zone
    )


def generate_events(rng: random.Random, n: int) -> list[dict]:
    t = 1_719_799_384 * 10**9 + rng.randrange(10**9)
    events = []
    for _ in range(n):
        t += rng.choice([0, 1, 10**6, 10**9, 3 * 10**9, INTERVAL - 1, INTERVAL, INTERVAL + 1, 7 * INTERVAL, -(10**9)])
        event: dict = {"time": time_text(t, rng)}
        for key in ("uuid", "email", "phone", "description"):
            if rng.random() < 0.9:
                event[key] = rng.choice(STRINGS) if rng.random() < 0.5 else f"{key}-{rng.randrange(10**6)}"
        if rng.random() < 0.9:
            event["id"] = rng.choice(IDS) if rng.random() < 0.5 else rng.randrange(-(2**63), 2**63)
        if rng.random() < 0.9:
            event["credits"] = rng.choice(FLOATS) if rng.random() < 0.5 else rng.uniform(-1e9, 1e9)
        if rng.random() < 0.9:
            event["active"] = rng.random() < 0.5
        if rng.random() < 0.05:
            event["id"] = None
        events.append(event)
    return events


def model_files(events: list[dict]) -> dict[str, bytes]:
    """The SPEC, written plainly: window by first event, names in UTC with -N on a clash."""
    files: dict[str, list[str]] = {}
    start = None
    name = ""
    for e in events:
        ns, text = timestamps.parse(e["time"])
        if start is None or ns - start >= INTERVAL:
            start = ns
            stem = "user-events-" + timestamps.utc_stamp(ns)
            name, n = stem + ".csv", 0
            while name in files:
                n += 1
                name = f"{stem}-{n}.csv"
            files[name] = []
        credits = e.get("credits")
        files[name].append(
            csv_record(
                [
                    text,
                    e.get("uuid") or "",
                    str(e.get("id") or 0),
                    "true" if e.get("active") else "false",
                    e.get("email") or "",
                    e.get("phone") or "",
                    e.get("description") or "",
                    "0" if credits is None else go_float(float(credits)),
                ]
            )
        )
    return {k: "".join(v).encode() for k, v in sorted(files.items())}


def requests_of(events: list[dict], rng: random.Random, sizes: list[int]) -> list[list[dict]]:
    """The events cut in order into requests, each of a size drawn from `sizes`."""
    requests, i = [], 0
    while i < len(events):
        n = rng.choice(sizes)
        requests.append(events[i : i + n])
        i += n
    return requests


def ndjson(events: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()
