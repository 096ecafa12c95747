"""The routes Starlette serves: every one but `POST /user/event`, which the protocol serves itself
(fastpath.py), and the wrapper that records each request's metrics and access line."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from batched_event_api.errors import ClientError
from batched_event_api.http import openapi
from batched_event_api.http.ingest import INGEST_PATH, IngestRoute


def create_app(route: IngestRoute) -> Any:
    """The ASGI application over an opened Ingest (the route's)."""
    ingest, settings = route.ingest, route.ingest.settings
    metrics, auth, requests = ingest.metrics, route.auth, route.requests

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        await ingest.start()
        yield
        await ingest.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = await route.unready_reason()
        body: dict[str, Any] = {"status": "ready"} if reason is None else {"status": "unavailable", "error": reason}
        if (backlog := ingest.output.backlog()) is not None:
            body["backlog"] = {"windows": backlog.windows, "bytes": backlog.bytes}
        return JSONResponse(body, status_code=200 if reason is None else 503)

    async def metrics_route(request: Request) -> Response:
        try:
            auth.check(request.headers.get("authorization", "").encode("latin-1"))
        except ClientError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    document = openapi.document(token=settings.auth_token is not None)

    async def openapi_route(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return HTMLResponse(openapi.DOCS_HTML)

    async def not_found(request: Request, exc: Exception) -> Response:
        # The path is not echoed: what a client sends goes back to no one, and to the log escaped.
        return JSONResponse({"error": f"no such route: events go to POST {INGEST_PATH}; see /docs"}, status_code=404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        return JSONResponse({"error": "method not allowed"}, status_code=405, headers=headers)

    async def ingest_elsewhere(request: Request) -> Response:
        # Other methods get 405 with Allow: POST, and POST is served by the HTTP protocol
        # (ingest_route.py): a POST gets here only for a path that Starlette's pattern takes for
        # the ingest path and the protocol does not (`/user/event%0a`: `$` matches before "\n").
        return await not_found(request, HTTPException(404))

    framework = Starlette(
        routes=[
            Route(INGEST_PATH, ingest_elsewhere, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/openapi.json", openapi_route, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Mount(openapi.DOCS_ASSETS, StaticFiles(directory=openapi.swagger_ui_files()), name="docs-assets"),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )

    routes = {route.path for route in framework.routes}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await framework(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await framework(scope, receive, send_and_watch)
        finally:
            path = scope["path"]
            requests.record(
                scope["method"], path, path if path in routes else "other", status, time.perf_counter() - started
            )

    return app
