"""Workloads nobody has seen: generated events of every tricky kind through the real server,
checked against an independent model of the SPEC's windowing and naming."""

from __future__ import annotations

import json
import random

import pytest

from model import generate_events, model_files
from snapshots import csv_files

# Every durability mode writes the same files (requests of 400 events span up to ~20 windows).
MODES = {"default": [], "fsync-never": ["--fsync", "never"], "sync-per-file": ["--sync-many", "per-file"]}


@pytest.mark.parametrize("mode", MODES)
def test_generated_events_in_random_requests_match_the_model(server_factory, mode):
    rng = random.Random(20241125)
    events = generate_events(rng, 3000)
    server = server_factory(*MODES[mode])
    i = 0
    while i < len(events):
        n = rng.choice([1, 2, 10, 100, 400])
        body = "".join(
            json.dumps(e, ensure_ascii=rng.random() < 0.5) + rng.choice(["\n", "\r\n"]) for e in events[i : i + n]
        )
        response = server.post(body.encode())
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": len(events[i : i + n])}
        i += n
    assert server.stop() == 0
    expected = model_files(events)
    got = csv_files(server.output)
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert not [p for p in server.output.iterdir() if p.name.endswith(".inprogress")]
