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
from conftest import Server, csv_files, post_maybe_killed, wait_for
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
            response, killed = post_maybe_killed(server, bodies[index], f"req-{index}", rng)
            if response is not None:
                assert response.status_code == 200, response.text
                replayed = bool(response.json().get("replay"))
                if unanswered is not None:
                    landed["after the commit, before the answer" if replayed else unanswered] += 1
                    unanswered = None
                index += 1
            if server.proc.poll() is not None or killed:
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


def test_concurrent_clients_and_kills_leave_every_acknowledged_request_once(tmp_path):
    """Group commit under SIGKILL: six clients at once (their requests share windows and rounds),
    kills at random instants, each client resending what got no answer with its key."""
    rng = random.Random(5)
    clients, per_client = 6, 80
    base = 1_719_799_384
    work = {
        (c, n): [{"time": f"2024-07-01T{(base + rng.randrange(1800)) % 86400 // 3600:02d}:"
                          f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z", "id": c * 1_000_000 + n * 1000 + k}
                 for k in range(rng.choice([1, 5, 40]))]
        for c in range(clients) for n in range(per_client)
    }
    out = tmp_path / "out"
    current = {"server": Server(out).start()}
    port = current["server"].port
    replays = collections.Counter()

    def client(c: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for n in range(per_client):
                retried = False
                while True:
                    try:
                        response = http.post("/user/event", content=ndjson(work[(c, n)]),
                                             headers={"content-type": "application/x-ndjson", "Idempotency-Key": f"c{c}-{n}"})
                    except httpx.TransportError:
                        retried = True
                        wait_for(lambda: _healthy(port), timeout=30)  # the restarted server, then resend
                        continue
                    assert response.status_code == 200, response.text
                    replays[retried and bool(response.json().get("replay"))] += 1
                    break

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    kills = 0
    pause = threading.Event()
    try:
        while any(t.is_alive() for t in threads) and kills < 15:
            pause.wait(rng.uniform(0.01, 0.08))  # a kill at a random instant of the running load
            current["server"].kill()
            kills += 1
            current["server"] = Server(out, port=port).start()
        for t in threads:
            t.join()
        assert current["server"].stop() == 0
    finally:
        if current["server"].proc.poll() is None:
            current["server"].kill()
    ids = [int(line.split(b",")[2]) for content in csv_files(out).values() for line in content.splitlines()]
    expected = sorted(event["id"] for events in work.values() for event in events)
    print(f"{clients} clients, {len(work)} requests, {kills} kills; {replays[True]} resends answered as replays")
    assert kills >= 5
    assert sorted(ids) == expected  # every event exactly once


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
