"""Idempotency keys over HTTP: kept for a time whatever other clients send, bounded by memory."""

from __future__ import annotations

import stat

from snapshots import csv_files

EVENT = b'{"time":"2024-07-01T02:03:04Z","id":1}\n'


def test_a_resend_after_thousands_of_other_keys_is_still_a_replay(server_factory):
    server = server_factory()
    assert server.post(EVENT, {"Idempotency-Key": "mine"}).json() == {"accepted": 1}
    for i in range(12_000):  # the old store kept the newest 10,000 keys of all clients
        assert server.post(b"", {"Idempotency-Key": f"flood-{i}"}).status_code == 200
    assert server.post(EVENT, {"Idempotency-Key": "mine"}).json() == {"accepted": 1, "replay": True}
    assert server.stop() == 0
    assert b"".join(csv_files(server.output).values()).count(b"\n") == 1


def test_past_the_key_memory_new_keys_get_503_with_retry_after_and_old_ones_stay(server_factory):
    server = server_factory("--key-memory", "2KiB", "--key-retention", "1h")
    statuses = [server.post(EVENT, {"Idempotency-Key": f"key-{i:04d}"}) for i in range(20)]
    accepted = [r for r in statuses if r.status_code == 200]
    refused = [r for r in statuses if r.status_code == 503]
    assert accepted and refused and len(accepted) + len(refused) == 20
    assert refused[0].json()["error"].startswith("too many Idempotency-Keys kept")
    assert 0 < int(refused[0].headers["retry-after"]) <= 3600
    # The keys taken are still recognised; keyless requests still go in.
    assert server.post(EVENT, {"Idempotency-Key": "key-0000"}).json() == {"accepted": 1, "replay": True}
    assert server.post(EVENT).status_code == 200
    assert server.stop() == 0
    assert b"".join(csv_files(server.output).values()).count(b"\n") == len(accepted) + 1


def test_files_are_created_readable_by_their_owner_only(server_factory):
    server = server_factory()
    assert server.post(EVENT, {"Idempotency-Key": "k"}).status_code == 200
    assert server.stop() == 0
    for path in server.output.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
