"""Real processes for the interop tests: a daphne server and the official JS client under Node."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "js" / "driver.js"


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class ServerProcess:
    """A daphne (or uvicorn, or ``uvicorn-lean``) subprocess on a free loopback port, stopped by its PID."""

    def __init__(
        self,
        log_path: Path,
        db_path: str,
        server: str = "daphne",
        extra_env: dict[str, str] | None = None,
        port: int = 0,
        extra_args: list[str] | None = None,
    ):
        """``port``: 0 for a free one; a fixed port lets a test restart a killed server where clients expect it."""
        self.log_path = log_path
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "SIGNALR_TEST_DB": db_path,
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        if server == "daphne":
            command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *(extra_args or [])]
            command.append("tests.asgi:application")
            pattern = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
        else:
            command = [
                sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--ws-per-message-deflate", "false", "--ws-max-size", "1048576",  # as the README runs it
            ]  # fmt: skip
            if server == "uvicorn-lean":  # uvicorn with the lean WebSocket protocol (signalr_groups.server.uvicorn_ws)
                command += ["--ws", "signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol"]
            command += extra_args or []
            pattern = re.compile(r"running on http://127\.0\.0\.1:(\d+)")
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port(pattern)

    def _wait_for_port(self, pattern: re.Pattern[str]) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            match = pattern.search(self.log_path.read_text())
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def post_json(self, path: str, body: dict[str, Any], cookie: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        request = urllib.request.Request(self.http_url + path, data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the server: no clean-up at all (its Redis state stays behind), as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._log.close()


class NodeDriver:
    """The official @microsoft/signalr client in a Node process, driven line by line (tests/js/driver.js)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["node", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._next_id = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.events: dict[str, list[dict[str, Any]]] = {}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._replies.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def call(self, op: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        command_id = self._next_id
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": command_id, "op": op, **fields}) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"node driver did not answer {op} {fields}")
            reply = self._replies.get(timeout=remaining)
            if reply.get("id") == command_id:
                return reply

    def connect(
        self, name: str, url: str, *, cookie: str | None = None, events: tuple[str, ...] = ("Receive",), **options: Any
    ) -> str | None:
        headers = {"Cookie": cookie} if cookie else {}
        reply = self.call("connect", name=name, url=url, headers=headers, events=list(events), **options)
        if not reply["ok"]:
            raise RuntimeError(f"connect {name} failed: {reply['error']}")
        self.events[name] = []
        return reply.get("connectionId")

    def invoke(self, name: str, method: str, *args: Any) -> Any:
        reply = self.call("invoke", name=name, method=method, args=list(args))
        if not reply["ok"]:
            raise InvocationError(reply["error"])
        return reply.get("result")

    def send(self, name: str, method: str, *args: Any) -> None:
        reply = self.call("send", name=name, method=method, args=list(args))
        if not reply["ok"]:
            raise InvocationError(reply["error"])

    def collect(self, name: str) -> list[dict[str, Any]]:
        """All events received so far by ``name`` (accumulated across calls)."""
        self.events[name].extend(self.call("events", name=name)["events"])
        return self.events[name]

    def wait_for(
        self, name: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.collect(name)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: condition not met; events: {events}")
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        self.call("stop", name=name)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("exit", timeout=5)
                self.process.wait(5)
            except (TimeoutError, subprocess.TimeoutExpired, BrokenPipeError, queue.Empty):
                self.process.kill()
                self.process.wait(5)


class InvocationError(Exception):
    """An invoke() rejected by the server (the Completion error text)."""


def received(events: list[dict[str, Any]], target: str = "Receive") -> list[list[Any]]:
    """The argument lists of events with ``target``."""
    return [event["args"] for event in events if event["target"] == target]


class RedisServer:
    """A redis-server on a fixed loopback port, started, SIGKILLed and restarted by its PID.

    Restarting on the same port gives the clients of the old one the Redis at the address they know:
    empty, or (``persistent``: an append-only file fsynced on every write) with everything it held.
    """

    def __init__(self, port: int, workdir: Path, persistent: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil
        import socket

        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (scripts/test.sh installs it)"
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"])
            + ["--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, "redis-server exited (port in use?)"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: every client connection drops, and everything Redis held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
