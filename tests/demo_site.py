"""The demo site under test: its own daphne and SQLite file, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.live import stop_process

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "signalr-demo"
#: Flags for Debian's chromium under Playwright (see ../shared/docs/toolchain-notes.md §4).
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


def chromium_path() -> str:
    """The system Chromium (``CHROMIUM`` overrides); the test command installs it."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("chromium is needed by the browser tests: apt-get install chromium (./scripts/test.sh does)")
    return path


def free_port() -> int:
    """A free loopback TCP port (the demo server must come back on the same one after a restart)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoSite:
    """The demo project (``hubproject``) on daphne, with a fresh database seeded by ``seed_demo``.

    It is the real site a newcomer runs, so the browser tests check what they would see.
    ``kill()`` and ``start()`` restart it on the same port, as an operator's restart would.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hubproject.settings",
            "DEMO_DB_PATH": str(workdir / "demo.sqlite3"),
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daphne.log"
        self._manage("migrate", "--verbosity", "0")
        self._manage("seed_demo")

    def _manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    @property
    def url(self) -> str:
        """The site's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start daphne on the site's port and wait until it accepts connections."""
        log = self.log_path.open("ab")
        command = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "hubproject.asgi:application",
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daphne did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL the server: no close frames, no clean-up, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            stop_process(self.process)


def log_in(browser: Any, site: DemoSite, username: str, **context_args: Any) -> Any:
    """A new browser context (a device) logged in as ``username``; returns its page."""
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.goto(f"{site.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site.url}/")
    return page


def open_room(page: Any, site: DemoSite, slug: str) -> None:
    """Go to a room and wait until the page has joined it over SignalR."""
    page.goto(f"{site.url}/rooms/{slug}/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected.'")


def side_by_side(browser: Any, images: list[tuple[str, bytes]], path: Path) -> None:
    """Compose labelled screenshots side by side into one PNG (rendered by the browser itself)."""
    cells = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{label}</figcaption></figure>'
        for label, png in images
    )
    html = (
        "<style>body{margin:0;padding:16px;background:#cfd5df;display:flex;gap:16px;align-items:flex-start;"
        "font:600 15px system-ui}figure{margin:0}img{display:block;border:1px solid #8a94a6;"
        "box-shadow:0 2px 8px #0003}figcaption{text-align:center;margin-top:6px}</style>" + cells
    )
    context = browser.new_context(viewport={"width": 400, "height": 300})
    page = context.new_page()
    page.set_content(html)
    page.wait_for_function("[...document.images].every((img) => img.complete)")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    context.close()


def screenshot_dir() -> Path:
    """Where the tests write their screenshots: ``SIGNALR_SCREENSHOTS_DIR``, else ``build/screenshots``.

    ``SIGNALR_SCREENSHOTS_DIR=docs/screenshots ./scripts/test.sh tests/browser`` refreshes
    the copies shown in the README.
    """
    return Path(os.environ.get("SIGNALR_SCREENSHOTS_DIR") or ROOT / "build" / "screenshots")
