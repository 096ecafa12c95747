"""What this package relies on in uvicorn (UVICORN_RELIES_ON): tests/test_uvicorn_contract.py
checks each against the installed uvicorn, so that an upgrade that drops one fails with its name."""

from __future__ import annotations

# What the protocol (and uvicorn) reads of the request in a connection's `cycle`: an IngestCycle
# has them too, to stand in for uvicorn's RequestResponseCycle.
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "keep_alive", "more_body", "disconnected")

# What this package relies on in uvicorn, where each is looked up ("module" or "module:qualname")
# and by kind: a class, a mapping, a method, an attribute (assigned as `self.<name>` in the
# class's code), a keyword parameter (of the class), or a fact of the code (text it contains).
UVICORN_RELIES_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "uvicorn": {"class": ("Config", "Server")},
    "uvicorn.protocols.http.httptools_impl": {
        "class": ("HttpToolsProtocol", "RequestResponseCycle"),
        "mapping": ("STATUS_LINE",),
    },
    "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol": {
        "method": (
            # overridden
            "__init__",
            "connection_made",
            "data_received",
            "on_message_begin",
            "on_url",
            "on_header",
            "on_headers_complete",
            "_start_asgi_task",
            "on_body",
            "on_message_complete",
            "on_response_complete",
            "pause_writing",
            "resume_writing",
            "shutdown",
            "connection_lost",
            # called
            "_unset_keepalive_if_required",
            "_should_upgrade",
            "handle_websocket_upgrade",
            "timeout_keep_alive_handler",
        ),
        "attribute": (
            "cycle",
            "pipeline",
            "flow",
            "parser",
            "transport",
            "headers",
            "url",
            "connections",
            "loop",
            "server_state",
            "expect_100_continue",
            "timeout_keep_alive",
            "timeout_keep_alive_task",
        ),
        # The cycle in the way of a new one is asked only whether it is answered.
        "source": ("existing_cycle.response_complete",),
    },
    "uvicorn.protocols.http.httptools_impl:RequestResponseCycle": {
        "method": ("send", "receive"),
        "attribute": ("message_event", "transport", *CYCLE_ATTRIBUTES),
        # The head is the first write once response_started is set (cycle.py's CycleTransport).
        "source": ("self.response_started = True",),
    },
    "uvicorn.protocols.http.flow_control:FlowControl": {
        "method": ("pause_reading", "resume_reading"),
        "attribute": ("read_paused", "write_paused"),
    },
    "uvicorn.server:ServerState": {"attribute": ("total_requests", "default_headers")},
    "uvicorn.server:Server": {
        "method": ("__init__", "run", "startup", "capture_signals", "handle_exit"),
        "attribute": ("started", "config"),
    },
    # The protocol class is called with keyword arguments: a partial with the route works as one.
    "uvicorn.server:Server.startup": {
        "source": ("config.http_protocol_class(", "config=config", "server_state=", "app_state=", "_loop=")
    },
    "uvicorn.config:Config": {
        "parameter": (
            "app",
            "host",
            "port",
            "loop",
            "http",
            "lifespan",
            "access_log",
            "proxy_headers",
            "log_config",
            "timeout_keep_alive",
            "timeout_graceful_shutdown",
        ),
    },
}
