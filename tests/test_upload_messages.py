"""The messages between the server and its upload process (output/messages.py): each kind goes
through the socket pair and comes out equal, typed."""

from __future__ import annotations

import socket

import msgspec
import pytest

from batched_event_api.output.messages import (
    AskPinned,
    Channel,
    ChildArgs,
    Drain,
    Drained,
    Pinned,
    Ready,
    Refused,
    Report,
    Stop,
    Wake,
)

MESSAGES = [
    Wake(),
    Pinned(["user-events-20240701-020000.00112233445566aa.csv"]),
    Drain(2.5),
    Stop(),
    Ready(),
    Refused("the endpoint http://x is plain http"),
    AskPinned(),
    Drained(True),
    Report((3, 4096, 1), [("created", 0.01), ("already_there", 0.002)], {"upload": 2}),
    Report(None, [], {}),
]


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    ours, theirs = Channel(a.detach()), Channel(b.detach())
    yield ours, theirs
    ours.close()
    theirs.close()


def test_every_message_crosses_the_socket_pair_whole(pair):
    ours, theirs = pair
    for message in MESSAGES:
        ours.send(message)
        assert theirs.recv() == message


def test_the_other_end_gone_is_an_eof(pair):
    ours, theirs = pair
    ours.close()
    with pytest.raises(EOFError):
        theirs.recv()


def test_the_child_arguments_round_trip_as_json():
    args = ChildArgs("/state", "s3://b/p/", 4, 10, 16 << 20, 16 << 20, "text", "info", 1234)
    assert msgspec.json.decode(msgspec.json.encode(args), type=ChildArgs) == args
