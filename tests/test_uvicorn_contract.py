"""What the server (http/uvicorn_server/, listed in its contract.py) relies on in uvicorn is all
still there: an upgrade of the pinned uvicorn that drops or renames one fails here, by name, rather
than somewhere in the HTTP tests."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from typing import Any

import pytest
import uvicorn
import uvicorn.config
import uvicorn.server
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl

from batched_event_api.http import uvicorn_server
from batched_event_api.http.transport import HeadJoiningTransport
from batched_event_api.http.uvicorn_server import contract
from batched_event_api.http.uvicorn_server.contract import CYCLE_ATTRIBUTES, UVICORN_RELIES_ON
from batched_event_api.http.uvicorn_server.cycle import CycleTransport, IngestCycle

MODULE = uvicorn_server.__name__  # the package to update, with its contract.py


def _lookup(where: str) -> Any:
    module_name, _, qualname = where.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        found = getattr(found, part, None)
    return found


def _source(owner: Any) -> str:
    """The code of a function, or of a class and the uvicorn classes it derives from."""
    if not inspect.isclass(owner):
        return inspect.getsource(owner)
    return "\n".join(inspect.getsource(c) for c in owner.__mro__ if c.__module__.startswith("uvicorn"))


def _has(owner: Any, kind: str, name: str) -> bool:
    if kind == "class":
        return inspect.isclass(getattr(owner, name, None))
    if kind == "mapping":
        return isinstance(getattr(owner, name, None), dict)
    if kind == "method":
        return inspect.isfunction(inspect.getattr_static(owner, name, None))
    if kind == "attribute":
        return re.search(rf"\bself\.{re.escape(name)}\s*(:[^=\n]+)?=[^=]", _source(owner)) is not None
    if kind == "parameter":
        return name in inspect.signature(owner).parameters
    if kind == "source":
        return name in _source(owner)
    raise AssertionError(f"unknown kind {kind!r} in {contract.__name__}.UVICORN_RELIES_ON")


def gone(relies_on: dict[str, dict[str, tuple[str, ...]]]) -> list[str]:
    """What of `relies_on` the installed uvicorn no longer has, one sentence each."""
    version = ".".join(uvicorn.__version__.split(".")[:2])
    missing = []
    for where, kinds in relies_on.items():
        owner = _lookup(where)
        if owner is None:
            missing.append(f"uvicorn {version} changed: {where} is gone; update {MODULE}")
            continue
        for kind, names in kinds.items():
            for name in names:
                if not _has(owner, kind, name):
                    what = f"{where} contains {name!r}" if kind == "source" else f"{where}.{name} ({kind})"
                    missing.append(f"uvicorn {version} changed: {what} is gone; update {MODULE}")
    return missing


def test_the_installed_uvicorn_has_everything_the_server_relies_on():
    missing = gone(UVICORN_RELIES_ON)
    assert not missing, "\n".join(missing)


class _OlderProtocol:
    """A protocol class as a changed uvicorn could have it: its cycle renamed, a method gone."""

    def __init__(self) -> None:
        self._cycle = None

    def data_received(self, data: bytes) -> None:
        pass


def _older_config(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """A Config that lost most of its parameters."""


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda mp: mp.delattr(httptools_impl.HttpToolsProtocol, "_should_upgrade"),
            "HttpToolsProtocol._should_upgrade (method) is gone",
        ),
        (
            lambda mp: mp.setattr(httptools_impl, "HttpToolsProtocol", _OlderProtocol),
            "HttpToolsProtocol.cycle (attribute) is gone",
        ),
        (lambda mp: mp.delattr(httptools_impl, "STATUS_LINE"), "httptools_impl.STATUS_LINE (mapping) is gone"),
        (lambda mp: mp.setattr(uvicorn.config, "Config", _older_config), "Config.timeout_graceful_shutdown"),
        (lambda mp: mp.delattr(uvicorn.server, "ServerState"), "uvicorn.server:ServerState is gone"),
        (
            lambda mp: mp.setattr(uvicorn.server.Server, "startup", _older_config),
            "Server.startup contains 'config.http_protocol_class(' is gone",
        ),
    ],
)
def test_a_uvicorn_without_one_of_them_fails_by_its_name(monkeypatch, change, expected):
    change(monkeypatch)
    missing = gone(UVICORN_RELIES_ON)
    assert any(expected in line for line in missing), missing
    version = ".".join(uvicorn.__version__.split(".")[:2])
    assert all(
        line.startswith(f"uvicorn {version} changed: ") and line.endswith(f"update {MODULE}") for line in missing
    )


def test_an_ingest_cycle_has_what_is_read_of_the_request_cycle_it_stands_in_for():
    assert set(CYCLE_ATTRIBUTES) <= set(IngestCycle.__slots__)
    assert set(CYCLE_ATTRIBUTES) <= set(
        UVICORN_RELIES_ON[f"{httptools_impl.__name__}:RequestResponseCycle"]["attribute"]
    )


class _Wire:
    """A transport that records each write, as one send()."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _cycle(wire: _Wire, expect_continue: bool = False, method: str = "GET") -> httptools_impl.RequestResponseCycle:
    connection = HeadJoiningTransport(wire)  # type: ignore[arg-type]
    cycle = httptools_impl.RequestResponseCycle(
        scope={"method": method, "http_version": "1.1", "type": "http"},  # type: ignore[typeddict-item]
        transport=connection,  # type: ignore[arg-type]
        flow=FlowControl(connection),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
        default_headers=[(b"server", b"test")],
        message_event=asyncio.Event(),
        expect_100_continue=expect_continue,
        keep_alive=True,
        on_response=lambda: connection.flush(),
    )
    cycle.transport = CycleTransport(connection, cycle)  # type: ignore[assignment]  # as the protocol does
    return cycle


async def _answer(cycle: httptools_impl.RequestResponseCycle, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    await cycle.send({"type": "http.response.body", "body": body})


def test_a_response_head_leaves_with_its_body_in_one_send():
    wire = _Wire()
    asyncio.run(_answer(_cycle(wire), b"HTTP/1.1 200 OK in the body"))
    assert len(wire.sends) == 1
    head, body = wire.sends[0].split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"HTTP/1.1 200 OK in the body"


def test_an_interim_continue_goes_out_at_once_and_the_answer_after_it_in_one_send():
    wire = _Wire()
    cycle = _cycle(wire, expect_continue=True)

    async def exchange() -> None:
        cycle.more_body = False
        cycle.message_event.set()
        await cycle.receive()
        assert wire.sends == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        await _answer(cycle, b"{}")

    asyncio.run(exchange())
    assert len(wire.sends) == 2 and wire.sends[1].startswith(b"HTTP/1.1 200 ") and wire.sends[1].endswith(b"{}")


def test_a_head_without_a_body_goes_out_when_the_response_completes():
    wire = _Wire()
    asyncio.run(_answer(_cycle(wire, method="HEAD"), b"not sent"))
    assert len(wire.sends) == 1 and wire.sends[0].endswith(b"\r\n\r\n")
