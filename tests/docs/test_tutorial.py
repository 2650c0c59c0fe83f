"""The tutorial (docs/tutorial/index.md), followed step by step as a reader would.

The page is walked in order. A code block whose title is a file name (```` ```python
title="mysite/chat/hubs.py" ````) is written to that file under a temporary folder, or appended to
it when its title says "(add to the end)". A ```` ```bash ```` block's commands are run:
``django-admin startproject``, ``cd``, ``python manage.py ...``, ``daphne ...`` (on a free loopback
port instead of 8000; a second ``daphne`` line restarts it, as the page says to) and ``node
client.js`` (pointed at that port). The environment comes from this checkout instead of from the
install commands: this virtualenv, where signalr_groups is installed in development mode, stands in
for ``pip install``, and ``npm install @microsoft/signalr`` links the checkout's node_modules (the
official client, installed by scripts/setup.sh). Any other command fails the test, so a new step
must be taught here.

The Node script's output must be exactly the page's ``Output`` block, and the page of step 8 is
opened in Debian's Chromium, where it must join the room and show what the Node script sends.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docs.fences import DOCS, ROOT, CodeBlock, code_blocks
from tests.live import free_port, stop_process

TUTORIAL = DOCS / "tutorial" / "index.md"
APPEND_MARK = "(add to the end)"
#: Environment variables of the test run that a reader's shell would not have.
_FOREIGN_ENV = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "SIGNALR_TEST_DB", "SIGNALR_REDIS_URL")


@dataclass
class Walk:
    """What following the tutorial did: the folder, the server, and what each command printed."""

    workdir: Path
    env: dict[str, str]
    cwd: Path
    port: int = 0
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    outputs: dict[str, list[subprocess.CompletedProcess[str]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, command: list[str], label: str, timeout: float = 120, **env: str) -> None:
        result = subprocess.run(
            command, cwd=self.cwd, env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )
        self.outputs.setdefault(label, []).append(result)
        if result.returncode != 0:
            raise AssertionError(
                f"`{label}` failed ({result.returncode}) in {self.cwd}:\n{result.stdout}\n{result.stderr}"
            )

    def start_daphne(self, args: list[str]) -> None:
        """``daphne ARGS`` with ``-p`` swapped for a free port; a running one is stopped first (a restart)."""
        self.stop_daphne()
        if "-p" not in args:
            raise AssertionError(f"the tutorial's daphne command has no -p PORT: {args}")
        args = list(args)
        self.port = free_port()
        args[args.index("-p") + 1] = str(self.port)
        self.server_log = self.workdir / f"daphne-{self.port}.log"
        with open(self.server_log, "wb") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "daphne", *args],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while f"Listening on TCP address 127.0.0.1:{self.port}" not in self.server_log.read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.stop_daphne()
                raise AssertionError(f"daphne did not start:\n{self.server_log.read_text()}")
            time.sleep(0.05)

    def stop_daphne(self) -> None:
        if self.server is not None:
            stop_process(self.server)  # by its PID
            self.server = None

    def daphne_log(self) -> str:
        return self.server_log.read_text() if self.server_log else ""


def _write(walk: Walk, block: CodeBlock) -> None:
    assert block.title is not None
    relative = block.title.removesuffix(APPEND_MARK).strip()
    target = walk.workdir / relative
    assert target.resolve().is_relative_to(walk.workdir.resolve()), f"line {block.line}: {relative} leaves the project"
    if block.title.endswith(APPEND_MARK):
        assert target.exists(), f"line {block.line}: {relative} should exist before the tutorial adds to it"
        with open(target, "a", encoding="utf-8") as file:
            file.write("\n" + block.body)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body, encoding="utf-8")


def _run_command(walk: Walk, line: str, block: CodeBlock) -> None:
    words = shlex.split(line)
    where = f"tutorial line {block.line}: `{line}`"
    match words:
        case ["python3", "-m", "venv", _] | ["source", _] | ["pip", "install", *_]:
            pass  # this virtualenv, with signalr_groups installed in development mode (scripts/setup.sh)
        case ["django-admin", *args]:
            walk.run([sys.executable, "-m", "django", *args], line)
        case ["cd", folder]:
            walk.cwd = walk.cwd / folder
            assert walk.cwd.is_dir(), f"{where}: no folder {walk.cwd}"
        case ["python", "manage.py", *args]:
            walk.run([sys.executable, "manage.py", *args], line)
            if args[:1] == ["check"]:
                printed = walk.outputs[line][-1]
                assert "System check identified no issues" in printed.stdout + printed.stderr, printed
        case ["npm", "install", "@microsoft/signalr"]:
            official = ROOT / "node_modules" / "@microsoft" / "signalr" / "package.json"
            assert official.exists(), "node_modules lacks @microsoft/signalr: run scripts/setup.sh"
            (walk.cwd / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
        case ["daphne", *args]:
            walk.start_daphne(args)
        case ["node", script]:
            assert walk.server is not None, f"{where}: no server is running"
            walk.run(["node", script], line, timeout=60, HUB_URL=f"{walk.url}/chatHub")
        case _:
            raise AssertionError(f"{where}: this test does not know how to run it; teach _run_command")


def _walk(walk: Walk, blocks: list[CodeBlock]) -> None:
    for block in blocks:
        if block.language == "bash":
            for line in block.body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    _run_command(walk, line.strip(), block)
        elif block.title and "/" in block.title:
            _write(walk, block)


def _expected_output(blocks: list[CodeBlock]) -> str:
    outputs = [block.body for block in blocks if block.title == "Output"]
    assert len(outputs) == 1, "the tutorial should show the Node script's output once, in a block titled Output"
    return outputs[0]


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """The tutorial's project, built and run; its last daphne is left running for the page test."""
    workdir = tmp_path_factory.mktemp("tutorial")
    env = {key: value for key, value in os.environ.items() if key not in _FOREIGN_ENV}
    walk = Walk(workdir=workdir, env=env, cwd=workdir)
    try:
        _walk(walk, code_blocks(TUTORIAL))
        yield walk
    finally:
        walk.stop_daphne()


def test_the_files_and_commands_are_all_there() -> None:
    """The walk below depends on these steps: if one is renamed away, say so plainly."""
    blocks = code_blocks(TUTORIAL)
    titles = {block.title for block in blocks if block.title}
    for expected in ("mysite/chat/hubs.py", "mysite/mysite/asgi.py", "mysite/mysite/urls.py", "mysite/client.js"):
        assert expected in titles
    commands = "\n".join(block.body for block in blocks if block.language == "bash")
    for expected in ("django-admin startproject mysite", "python manage.py migrate", "daphne ", "node client.js"):
        assert expected in commands


def test_node_client_prints_the_documented_output(tutorial: Walk) -> None:
    """Connect, join a group, send, receive, a refused call and a return value: exactly as documented."""
    runs = tutorial.outputs["node client.js"]
    assert runs, "the tutorial never ran node client.js"
    expected = _expected_output(code_blocks(TUTORIAL))
    for result in runs:
        assert result.stdout == expected, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in tutorial.daphne_log(), tutorial.daphne_log()


def test_page_and_its_client_are_served(tutorial: Walk) -> None:
    with urllib.request.urlopen(tutorial.url + "/", timeout=10) as response:
        page = response.read().decode()
    script = re.search(r'<script src="([^"]+signalr\.js)"', page)
    assert script, page
    with urllib.request.urlopen(tutorial.url + script.group(1), timeout=10) as response:
        assert b"HubConnectionBuilder" in response.read()


def test_page_chats_in_chromium(tutorial: Walk) -> None:
    """Step 8: the page joins the room, and shows the notices and the post of a Node run."""
    from playwright.sync_api import expect, sync_playwright

    from tests.demo_site import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(tutorial.url + "/")
            messages = page.locator("#messages")
            expect(messages).to_contain_text("Connected.", timeout=10_000)
            page.get_by_role("button", name="Join").click()
            expect(messages).to_contain_text("joined lobby.")
            page.get_by_label("Message").fill("Hi from the page")
            page.get_by_role("button", name="Send").click()
            expect(messages).to_contain_text(": Hi from the page")
            # The page is a third member of lobby: the script's count then says 3.
            tutorial.run(
                ["node", "client.js"], "node with the page open", timeout=60, HUB_URL=f"{tutorial.url}/chatHub"
            )
            expect(messages).to_contain_text("alice joined lobby.")
            expect(messages).to_contain_text("[lobby] alice: Hello, lobby!")
        finally:
            browser.close()
