"""/docs in a real headless browser with no network beyond this machine: Swagger UI's files come
from the server itself, so the page renders every route (it was a blank page offline when they
came from a CDN)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

ROUTES = ["/user/event", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"]


def test_docs_render_every_route_with_no_network(server_factory, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("this test needs Chromium: `make test` installs it (apt-get install chromium)")
    server = server_factory()
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # any other host: unresolvable
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{server.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for route in ROUTES:
        assert f'data-path="{route}"' in dom, f"{route} not rendered"
    assert 'href="/openapi.json"' in dom
    assert server.stop() == 0
    log = server.log.read_text()
    assert "GET /docs/assets/swagger-ui-bundle.js 200" in log and "GET /docs/assets/swagger-ui.css 200" in log
