"""Screenshots of the documentation site: its home page and a reference page, in Debian's Chromium.

    .venv/bin/python scripts/docs_screenshots.py            # writes docs/screenshots/docs-*.png

Builds the site strictly into a temporary folder, serves it on a free loopback port from this
process, and opens it with Playwright driving the system Chromium (``CHROMIUM`` overrides the one on
``PATH``; no browser is downloaded).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
#: Flags for Debian's chromium under Playwright, as tests/demo_site.py uses them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: (file name, page path, a heading that must be on the page before the shot)
SHOTS = [
    ("docs-home.png", "", "What you get"),
    ("docs-reference.png", "reference/api/hubs/", "Hubs"),
]


def chromium_path() -> str:
    """The system Chromium (``CHROMIUM`` overrides); ``apt-get install chromium`` provides it."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SystemExit("chromium is needed: apt-get install chromium (./scripts/test.sh does)")
    return path


def build_site(site_dir: Path) -> None:
    """``mkdocs build --strict`` into ``site_dir``."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    subprocess.run(
        [str(mkdocs), "build", "--strict", "--quiet", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Say nothing per request."""


@contextmanager
def serve(site_dir: Path) -> Iterator[str]:
    """Serve ``site_dir`` on a free loopback port, in a thread of this process; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def take(base_url: str, out_dir: Path) -> list[Path]:
    """One screenshot per entry of :data:`SHOTS`, at a laptop's window size."""
    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860}, color_scheme="light")
            for name, path, expected in SHOTS:
                page.goto(base_url + path)
                page.locator("article h1, article h2").filter(has_text=expected).first.wait_for(timeout=10_000)
                target = out_dir / name
                page.screenshot(path=str(target))
                written.append(target)
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        site_dir = Path(scratch) / "site"
        build_site(site_dir)
        with serve(site_dir) as base_url:
            for path in take(base_url, options.out):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
