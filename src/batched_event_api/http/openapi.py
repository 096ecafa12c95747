"""The OpenAPI 3.1 document of every route, and the /docs page that renders it."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

from batched_event_api import __version__
from batched_event_api.http.rules import INGEST_PATH, NDJSON_TYPES, TEXT_TYPES


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_EVENT = {
    "type": "object",
    "description": "One line of the NDJSON body. Unknown keys are ignored; keys are case-sensitive.",
    "required": ["time"],
    "properties": {
        "time": {"type": "string", "description": "RFC 3339 with a zone (Z or ±hh:mm), up to 9 fraction digits"},
        "uuid": {"type": ["string", "null"]},
        "id": {"type": ["integer", "null"], "minimum": -(2**63), "maximum": 2**63 - 1},
        "active": {"type": ["boolean", "null"]},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "description": {"type": ["string", "null"]},
        "credits": {"type": ["number", "null"], "description": "finite float64"},
    },
}

# The media types are the ones taken (rules.py), each described as lines of events or as a string
# of them; the unadvertised ones taken are left out.
# NDJSON: the schema describes the lines (one Event each), as is usual for streamed JSON bodies.
_NDJSON_BODY = {
    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
    "example": [{"time": "2024-07-01T02:03:04Z", "id": 1, "active": True, "credits": 1.5}],
}
_TEXT_BODY = {
    "schema": {"type": "string", "description": "Newline-delimited JSON: one Event object per line."},
    "example": '{"time":"2024-07-01T02:03:04Z","id":1,"active":true,"credits":1.5}\n',
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "batched-event-api",
        "version": __version__,
        "description": "Receives user events as NDJSON and writes them as CSV files, one per window of event time.",
    },
    "paths": {
        INGEST_PATH: {
            "post": {
                "summary": "Ingest NDJSON events",
                "description": "The whole request is validated, then written and fsync'ed before the 200; "
                "a refused request writes nothing.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "A request whose key was already applied is answered 200 again without writing.",
                    },
                    {
                        "name": "Content-Encoding",
                        "in": "header",
                        "required": False,
                        "description": "gzip or identity (case-insensitive; empty means identity)",
                        "schema": {
                            "type": "string",
                            "pattern": r"^\s*([gG][zZ][iI][pP]|[iI][dD][eE][nN][tT][iI][tT][yY])?\s*$",
                        },
                    },
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        **{media_type: _NDJSON_BODY for media_type in NDJSON_TYPES},
                        **{media_type: _TEXT_BODY for media_type in TEXT_TYPES},
                    },
                },
                "responses": {
                    "200": {
                        "description": "Written durably",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                    },
                    "400": _error("A line is not a valid event (line and field named), or the body is corrupt"),
                    "401": _error("Missing or wrong bearer token (when a token is configured)"),
                    "405": _error("Method not allowed (Allow: POST)"),
                    "408": _error(
                        "The headers or body did not arrive within their timeout, or the body "
                        "arrived slower than --min-body-rate (the connection is closed)"
                    ),
                    "413": _error("Body or line larger than the limit, or more windows than --max-windows-per-request"),
                    "414": _error("URL longer than 8 KiB (the connection is closed)"),
                    "415": _error("Unsupported Content-Type or Content-Encoding"),
                    "431": _error("Request line and headers larger than --max-header-size (the connection is closed)"),
                    "503": _error(
                        "Storage unavailable (disk full, directory not writable), too many request bytes "
                        "pending, too many keys kept, the upload backlog full, or the server shutting down: "
                        "retry after Retry-After"
                    ),
                },
                "security": [{}, {"bearer": []}],
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "responses": {
                    "200": {"description": "alive", "content": {"application/json": {"schema": {"type": "object"}}}}
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "The output directory is writable and the writer healthy",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "503": _error("not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _error("Missing or wrong bearer token"),
                },
                "security": [{}, {"bearer": []}],
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/docs": {
            "get": {
                "summary": "Interactive documentation",
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Event": _EVENT,
            "Accepted": {
                "type": "object",
                "required": ["accepted"],
                "properties": {"accepted": {"type": "integer"}, "replay": {"type": "boolean"}},
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "line": {"type": "integer"}, "field": {"type": "string"}},
            },
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def document(token: bool) -> dict[str, Any]:
    """The document this server serves: without a token configured, no route asks for one (Swagger
    UI would show a lock on each) and none answers 401."""
    if token:
        return DOCUMENT
    doc = copy.deepcopy(DOCUMENT)
    del doc["components"]["securitySchemes"]
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            operation["responses"].pop("401", None)
    return doc


DOCS_ASSETS = "/docs/assets"  # Swagger UI's files, served from the installed swagger-ui-py package

# Swagger UI from this server, so the page works without internet; the plain link is there for
# any reader without JavaScript.
DOCS_HTML = f"""<!doctype html>
<html><head><title>batched-event-api</title><meta charset="utf-8">
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css"></head>
<body>
<p style="font-family:sans-serif;margin:1em 2em">The API description itself: <a href="/openapi.json">/openapi.json</a></p>
<div id="ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui"}});</script>
</body></html>
"""


def swagger_ui_files() -> Path:
    """The folder of Swagger UI's static files in the swagger-ui-py package (found without
    importing it: its Python side needs Jinja2, and only the files are used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: reinstall batched-event-api")
    return Path(spec.submodule_search_locations[0]) / "static"
