"""Concurrent clients: every request is applied whole, and the files equal some serial order."""

from __future__ import annotations

import csv
import io
import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from model import model_files, time_text
from servers import NDJSON
from snapshots import csv_files

CLIENTS = 10
REQUESTS = 20
EVENTS = 25
BASE = 1_719_799_384 * 10**9


def _request(client: int, number: int, rng: random.Random) -> list[dict]:
    events = []
    for k in range(EVENTS):
        ns = BASE + rng.randrange(0, 30 * 60 * 10**9)  # spread over ~6 windows, in any order
        events.append(
            {
                "time": time_text(ns, rng),
                "id": client * 1_000_000 + number * 1_000 + k,
                "description": rng.choice(["a,b", 'q"q', "multi\nline", "plain", " lead"]),
                "credits": rng.uniform(-1e6, 1e6),
            }
        )
    return events


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_parallel_clients_files_equal_a_serial_order(server_factory, fsync):
    server = server_factory("--fsync", fsync)
    rng = random.Random(7)
    work = {(c, n): _request(c, n, rng) for c in range(CLIENTS) for n in range(REQUESTS)}

    def run_client(c: int) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            statuses = []
            for n in range(REQUESTS):
                body = "".join(json.dumps(e) + "\n" for e in work[(c, n)]).encode()
                response = http.post("/user/event", content=body, headers=NDJSON)
                statuses.append(response.status_code)
            return statuses

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [s for result in pool.map(run_client, range(CLIENTS)) for s in result]
    assert statuses == [200] * CLIENTS * REQUESTS
    assert server.stop() == 0

    files = csv_files(server.output)
    rows = [r for content in files.values() for r in csv.reader(io.StringIO(content.decode(), newline=""))]
    ids = [int(r[2]) for r in rows]
    assert sorted(ids) == sorted(e["id"] for events in work.values() for e in events)  # nothing lost or doubled
    # Each request's rows are contiguous and in order: read back the serial order of whole requests.
    order = []
    for start in range(0, len(ids), EVENTS):
        block = ids[start : start + EVENTS]
        key = (block[0] // 1_000_000, block[0] // 1_000 % 1_000)
        assert block == [e["id"] for e in work[key]], "a request was interleaved with another"
        order.append(key)
    assert files == model_files([e for key in order for e in work[key]])


def test_small_requests_without_fsync_on_many_connections_equal_a_serial_order(server_factory):
    """One to three events per request on 16 connections with --fsync never: most rounds run on
    the event loop (a few hundred bytes to the open file), some open the next window and go to
    the writer thread. Every answer 200; the files are those of some serial order of whole requests."""
    server = server_factory("--fsync", "never")
    rng = random.Random(11)
    clients, requests = 16, 40
    work = {
        (c, n): [
            {"time": time_text(BASE + rng.randrange(0, 12 * 60 * 10**9), rng), "id": c * 1_000_000 + n * 1_000 + k}
            for k in range(rng.randint(1, 3))
        ]
        for c in range(clients)
        for n in range(requests)
    }

    def run_client(c: int) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            return [
                http.post(
                    "/user/event", content="".join(json.dumps(e) + "\n" for e in work[(c, n)]).encode(), headers=NDJSON
                ).status_code
                for n in range(requests)
            ]

    with ThreadPoolExecutor(clients) as pool:
        statuses = [s for result in pool.map(run_client, range(clients)) for s in result]
    assert statuses == [200] * clients * requests
    assert server.stop() == 0

    files = csv_files(server.output)
    ids = [int(r[2]) for content in files.values() for r in csv.reader(io.StringIO(content.decode(), newline=""))]
    assert sorted(ids) == sorted(e["id"] for events in work.values() for e in events)
    order, i = [], 0
    while i < len(ids):
        key = (ids[i] // 1_000_000, ids[i] // 1_000 % 1_000)
        expected = [e["id"] for e in work[key]]
        assert ids[i : i + len(expected)] == expected, "a request was interleaved with another"
        order.append(key)
        i += len(expected)
    assert files == model_files([e for key in order for e in work[key]])
