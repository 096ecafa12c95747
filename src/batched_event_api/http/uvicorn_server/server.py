"""The server: run() serves the application and the ingest route on uvicorn, with our connection
protocol (protocol.py); Server adds the line saying where it serves and a clean exit after SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import uvicorn

from batched_event_api.http.exchange import IngestRoute
from batched_event_api.http.routes import create_app
from batched_event_api.http.uvicorn_server.limits import ConnectionLimits
from batched_event_api.http.uvicorn_server.protocol import ConnectionProtocol

if TYPE_CHECKING:
    from batched_event_api.config import Settings

log = logging.getLogger("batched_event_api")


def run(settings: Settings, route: IngestRoute, listener: socket.socket) -> bool:
    """Serve on the listening socket until a signal (or a failed startup): whether it started."""
    config = uvicorn.Config(
        create_app(route),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        # uvicorn calls it with keyword arguments, as it would the class (Server.startup).
        http=cast(
            "type[asyncio.Protocol]",
            functools.partial(ConnectionProtocol, route=route, limits=ConnectionLimits.of(settings)),
        ),
        lifespan="on",
        access_log=False,  # ours is batched_event_api.access, with the events and bytes of each request
        proxy_headers=False,  # no client address is used, so X-Forwarded-For is not read
        log_config=None,
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]  # a float works: call_later
        timeout_graceful_shutdown=30,
    )
    server = Server(config, settings)
    server.run(sockets=[listener])
    return server.started


class Server(uvicorn.Server):
    """Says where it listens once it does, and exits 0 after a graceful SIGTERM/SIGINT shutdown
    (uvicorn re-raises the signal)."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            settings = self.settings
            host, port = sockets[0].getsockname()[:2]
            where = f"{settings.store_url} (state in {settings.output})" if settings.store_url else settings.output
            log.info(
                "serving on http://%s:%d, writing to %s (interval %gs, idle close %gs, fsync %s)",
                f"[{host}]" if ":" in host else host,
                port,
                where,
                settings.interval,
                settings.idle_close,
                "always" if settings.fsync else "never",
            )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield
