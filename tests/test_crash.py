"""Fault injection: SIGKILL the real server at random instants, restart, resend what got no 200.

The files must equal those of an uninterrupted run, byte for byte: nothing acknowledged is lost,
nothing is duplicated, nothing of an unacknowledged request survives on its own.
"""

from __future__ import annotations

import collections
import os
import random
import threading

import httpx
import pytest
from conftest import Server, csv_files
from model import generate_events, ndjson

SEEDS = [int(s) for s in os.environ.get("BEA_CRASH_SEEDS", "1,2").split(",")]


def _requests(rng: random.Random) -> list[bytes]:
    events = generate_events(rng, 12000)
    bodies, i = [], 0
    while i < len(events):
        n = rng.choice([1, 20, 100, 200, 400])
        bodies.append(ndjson(events[i : i + n]))
        i += n
    return bodies


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kills_give_the_same_files_as_an_uninterrupted_run(tmp_path, seed):
    rng = random.Random(seed)
    bodies = _requests(rng)

    clean = Server(tmp_path / "clean").start()
    for body in bodies:
        assert clean.post(body).status_code == 200
    assert clean.stop() == 0
    expected = csv_files(clean.output)
    assert len(expected) > 10

    out = tmp_path / "crashy"
    server = Server(out).start()
    kills = 0
    # Where each kill landed: between requests (after an answer), before the request wrote
    # anything, while it was writing (bytes on disk past the last acknowledged state: rolled
    # back), or after its commit but before its answer (its resend is answered as a replay).
    landed = collections.Counter()
    index = 0
    acknowledged = _sizes(out)
    unanswered: str | None = None
    try:
        while index < len(bodies):
            timer = None
            if rng.random() < 0.35:  # a kill at a random instant: before, during or after this request
                timer = threading.Timer(rng.uniform(0, 0.015), server.proc.kill)
                timer.start()
            try:
                response = server.post(bodies[index], headers={"Idempotency-Key": f"req-{index}"})
            except httpx.TransportError:
                response = None
            if timer is not None:
                timer.join()
            if response is not None:
                assert response.status_code == 200, response.text
                replayed = bool(response.json().get("replay"))
                if unanswered is not None:
                    landed["after the commit, before the answer" if replayed else unanswered] += 1
                    unanswered = None
                index += 1
            if server.proc.poll() is not None or timer is not None:
                server.kill()
                kills += 1
                if response is not None:
                    landed["between requests"] += 1
                else:
                    unanswered = "while writing" if _sizes(out) != acknowledged else "before any write"
                server = Server(out).start()  # same directory: recover and carry on
            acknowledged = _sizes(out)  # what was answered, or what recovery left
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.kill()
    print(f"seed {seed}: {len(bodies)} requests, {kills} kills survived; landed: {dict(landed)}")
    assert kills >= 20
    assert landed["while writing"] + landed["after the commit, before the answer"] >= 1  # some hit a commit
    assert csv_files(out) == expected
    assert not [p.name for p in out.iterdir() if p.name.endswith(".inprogress")]


def _sizes(directory) -> dict[str, int]:
    """Every file's size (the journal's included): what a request's writes change."""
    return {p.name: p.stat().st_size for p in directory.iterdir()} if directory.exists() else {}
