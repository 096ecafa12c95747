"""The routes Starlette serves: every one but `POST /user/event`, which the connection protocol
serves itself (uvicorn_server/), and the wrapper that records each request's metrics and access
line. Each endpoint finds what it needs in `request.app.state`: `route` (the IngestRoute) and
`document` (the OpenAPI document served)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from batched_event_api.errors import ClientError
from batched_event_api.http import openapi
from batched_event_api.http.access import RequestLog
from batched_event_api.http.answers import error_body, json_body
from batched_event_api.http.exchange import IngestRoute
from batched_event_api.http.rules import INGEST_PATH

_JSON_TYPE = "application/json"


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json_body(payload), status_code=status, media_type=_JSON_TYPE)


def error_response(error: ClientError) -> Response:
    """An error answer, its body as every error's (answers.error_body)."""
    return Response(error_body(error), status_code=error.status, headers=error.headers, media_type=_JSON_TYPE)


def _route(request: Request) -> IngestRoute:
    route: IngestRoute = request.app.state.route
    return route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    ingest = app.state.route.ingest
    await ingest.start()
    yield
    await ingest.stop()


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    route = _route(request)
    reason = await route.unready_reason()
    body: dict[str, Any] = {"status": "ready"} if reason is None else {"status": "unavailable", "error": reason}
    if (backlog := route.ingest.output.backlog()) is not None:
        body["backlog"] = {"windows": backlog.windows, "bytes": backlog.bytes}
    return json_response(body, 200 if reason is None else 503)


async def metrics(request: Request) -> Response:
    route = _route(request)
    try:
        route.auth.check(request.headers.get("authorization", "").encode("latin-1"))
    except ClientError as exc:
        return error_response(exc)
    return Response(generate_latest(route.ingest.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_document(request: Request) -> Response:
    return json_response(request.app.state.document)


async def docs(request: Request) -> Response:
    return HTMLResponse(openapi.DOCS_HTML)


async def not_found(request: Request, exc: Exception | None = None) -> Response:
    # The path is not echoed: what a client sends goes back to no one, and to the log escaped.
    return error_response(ClientError(f"no such route: events go to POST {INGEST_PATH}; see /docs", status=404))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = getattr(exc, "headers", None) or {}
    return error_response(ClientError("method not allowed", status=405, headers=headers))


async def ingest_elsewhere(request: Request) -> Response:
    # Other methods get 405 with Allow: POST, and POST is served by the connection protocol: a
    # POST gets here only for a path that Starlette's pattern takes for the ingest path and the
    # protocol does not (`/user/event%0a`: `$` matches before "\n").
    return await not_found(request)


def create_app(route: IngestRoute) -> RecordedApp:
    """The ASGI application over an opened Ingest (the route's)."""
    framework = Starlette(
        routes=[
            Route(INGEST_PATH, ingest_elsewhere, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_document, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Mount(openapi.DOCS_ASSETS, StaticFiles(directory=openapi.swagger_ui_files()), name="docs-assets"),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    framework.state.route = route
    framework.state.document = openapi.document(token=route.ingest.settings.auth_token is not None)
    return RecordedApp(framework, route.requests)


class RecordedApp:
    """The Starlette application, with each HTTP request's metrics and access line recorded
    (the route named when it is one of the application's, else "other")."""

    def __init__(self, framework: Starlette, requests: RequestLog) -> None:
        self.framework = framework
        self.requests = requests
        self.routes = {route.path for route in framework.routes if isinstance(route, (Route, Mount))}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.framework(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.framework(scope, receive, send_and_watch)
        finally:
            path = scope["path"]
            self.requests.record(
                scope["method"], path, path if path in self.routes else "other", status, time.perf_counter() - started
            )
