"""A page on another origin, listed in ALLOWED_ORIGINS, connects on every transport (CORS); an unlisted one cannot.

The page is served by a plain static server on its own loopback port (so its origin differs from the
hub's by the port), with the official browser client copied from node_modules at test time.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Browser, sync_playwright

from tests.demo_site import CHROMIUM_ARGS, chromium_path
from tests.live import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cross-origin</title><script src="signalr.js"></script></head>
<body><pre id="out">starting</pre>
<script>
  const params = new URLSearchParams(location.search);
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(params.get("hub"), { transport: signalR.HttpTransportType[params.get("transport")] })
    .build();
  connection.start()
    .then(() => connection.invoke("Echo", "across origins"))
    .then((result) => { document.getElementById("out").textContent = "ok:" + result; })
    .catch((error) => { document.getElementById("out").textContent = "failed:" + error.message; });
</script></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No request log on the test's output."""


class StaticSite:
    """A static file server on a free loopback port, in a thread (stopped by the fixture)."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StaticSite, StaticSite]]:
    """Two static sites with the same page: the first one's origin is listed, the second's is not."""
    directory = tmp_path_factory.mktemp("cross-origin-page")
    (directory / "index.html").write_text(PAGE)
    shutil.copy(ROOT / "node_modules" / "@microsoft" / "signalr" / "dist" / "browser" / "signalr.js", directory)
    listed, unlisted = StaticSite(directory), StaticSite(directory)
    yield listed, unlisted
    listed.stop()
    unlisted.stop()


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def hub_server(request, pages, django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """The hub on each server we support, listing the first page's origin in ALLOWED_ORIGINS."""
    listed, _unlisted = pages
    env = {"SIGNALR_TEST_SETTINGS": json.dumps({"ALLOWED_ORIGINS": [listed.origin]})}
    log = tmp_path_factory.mktemp("cross-origin") / "server.log"
    server = ServerProcess(log, str(settings.DATABASES["default"]["NAME"]), server=request.param, extra_env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _outcome(browser: Browser, site: StaticSite, hub_url: str, transport: str) -> str:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.origin}/index.html?hub={hub_url}/interop&transport={transport}")
        page.wait_for_function("!document.getElementById('out').textContent.startsWith('starting')", timeout=15000)
        return page.locator("#out").inner_text()
    finally:
        context.close()


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
def test_a_listed_origin_connects_on_every_transport(browser, pages, hub_server, transport):
    listed, _unlisted = pages
    assert _outcome(browser, listed, hub_server.http_url, transport) == "ok:across origins"


@pytest.mark.parametrize("transport", ["ServerSentEvents", "LongPolling"])
def test_an_unlisted_origin_cannot_negotiate(browser, pages, hub_server, transport):
    _listed, unlisted = pages
    outcome = _outcome(browser, unlisted, hub_server.http_url, transport)
    assert outcome.startswith("failed:"), outcome
