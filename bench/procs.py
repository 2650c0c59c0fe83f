"""Processes of the suite: servers under test and redis-server, each on a free loopback port, stopped by PID.

Also the procfs readings (CPU seconds, RSS) and CPU pinning helpers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
CLIENT_CORE = 1

#: Implementation name -> (server kind, WebSocket path, client protocol).
IMPLS: dict[str, tuple[str, str, str]] = {
    "hub-uvicorn": ("uvicorn", "/hub", "signalr"),
    # The same, with METRICS off: what the Prometheus metrics cost on the hot path.
    "hub-uvicorn-nometrics": ("uvicorn-nometrics", "/hub", "signalr"),
    # As deploy/ runs it: the lean WebSocket protocol (signalr_groups/server/uvicorn_ws.py), GC_FREEZE_CONNECTIONS 1000.
    "hub-uvicorn-lean": ("uvicorn-lean", "/hub", "signalr"),
    "hub-daphne": ("daphne", "/hub", "signalr"),
    "raw_ws": ("raw_ws", "/", "signalr"),
    "channels-daphne": ("daphne", "/channels", "signalr"),
    "socketio": ("socketio", "/socket.io/", "sio"),
    # raw_ws with SignalR's keep-alive instead of websockets' pings: the idle scenario's baseline.
    "raw_ws-keepalive": ("raw_ws-keepalive", "/", "signalr"),
    # The Node.js baselines (bench/servers/node_*.js; bench/run.sh installs bench/package.json's packages).
    "node-ws": ("node-ws", "/", "signalr"),
    "node-socketio": ("node-socketio", "/socket.io/", "sio"),
}


#: The cores this process may use, as it started: the load generator pins itself to :data:`CLIENT_CORE`
#: before it starts any server, and its affinity then no longer says whether the server's core exists.
_HOST_CORES: Final = frozenset(os.sched_getaffinity(0))


def pinning_available() -> bool:
    """Two cores or more: server on core 0, load generator (and redis) on core 1.

    Decided from the cores the process started with (:data:`_HOST_CORES`), not its affinity now: a
    server started after the load generator pinned itself would otherwise inherit the load generator's
    core and share it (every bench run before this fix did).
    """
    return len(_HOST_CORES) >= 2 and {SERVER_CORE, CLIENT_CORE} <= _HOST_CORES


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (procfs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_precise(pid: int) -> float:
    """CPU seconds of a process in ns resolution: its threads' run time in /proc/PID/task/*/schedstat.

    Falls back to ``cpu_seconds`` (10 ms ticks) without schedstat. Threads that have exited are not counted
    (the servers' are long-lived: the event loop's thread, executor threads).
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return total / 1e9 if total else cpu_seconds(pid)


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (procfs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    """A free loopback TCP port (for redis-server, which cannot report one it picked itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Process:
    """A subprocess whose log announces its port; pinned to ``core``; stopped by PID."""

    def __init__(
        self,
        command: list[str],
        pattern: str,
        env: dict[str, str],
        core: int | None,
        name: str,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.fixed_port = port
        #: The loop-lag probe's file (bench/lagprobe.py) when the server runs one (BENCH_LAG_FILE).
        self.lag_file = Path(env["BENCH_LAG_FILE"]) if env.get("BENCH_LAG_FILE") else None
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        try:
            if core is not None and pinning_available():
                os.sched_setaffinity(self.pid, {core})
                if os.sched_getaffinity(self.pid) != {core}:
                    raise RuntimeError(f"{name}: could not pin the server to core {core}")
            self.port = self._wait_for_port(re.compile(pattern))
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, pattern: re.Pattern[str]) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()[-3000:]}")
            match = pattern.search(self.log_path.read_text())
            if match:
                return int(match.group(1))
            if self.fixed_port is not None and _listening(self.fixed_port):
                return self.fixed_port
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def cpu(self) -> float:
        """CPU seconds used so far (ns resolution where schedstat is available)."""
        return cpu_seconds_precise(self.pid)

    def rss(self) -> int:
        """RSS in KiB."""
        return rss_kib(self.pid)

    def alive(self) -> bool:
        """Still running?"""
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the log (for error reports)."""
        return self.log_path.read_text()[-chars:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; by PID only."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        # BENCH_KEEP_LOGS=1 keeps /tmp/bench-<server>-*.log (with BENCH_GC_LOG=1: the collections over 5 ms)
        if not os.environ.get("BENCH_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)
        if self.lag_file is not None:
            for suffix in ("", ".gc-request", ".gc-request.tmp", ".gc.json", ".gc.json.tmp"):
                Path(str(self.lag_file) + suffix).unlink(missing_ok=True)


def start_server(kind: str, layer: str = "memory", redis_url: str = "", core: int | None = SERVER_CORE) -> Process:
    """Start one server process of ``kind`` (uvicorn, daphne, raw_ws, socketio, node-ws, ...) on port 0."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_LAYER": layer,
        "BENCH_REDIS_URL": redis_url,
        "BENCH_GC_LOG": os.environ.get("BENCH_GC_LOG", ""),
        "BENCH_TRACEMALLOC": os.environ.get("BENCH_TRACEMALLOC", ""),
        "BENCH_DB": str(Path(tempfile.gettempdir()) / f"signalr_groups_bench_{os.getpid()}.sqlite3"),
        "BENCH_METRICS": "0" if kind == "uvicorn-nometrics" else "1",
    }
    if os.environ.get("BENCH_LAG_MODE") != "off":  # bench/lagprobe.py in the Python servers (Node ones ignore it)
        env["BENCH_LAG_FILE"] = tempfile.mkstemp(prefix=f"bench-lag-{kind}-", suffix=".txt")[1]
    if kind == "uvicorn-nometrics":
        kind = "uvicorn"
    lean_ws: list[str] = []
    if kind == "uvicorn-lean":  # as deploy/ runs the hub: the lean protocol, and settings_production's GC freeze
        kind, lean_ws = "uvicorn", ["--ws", "signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol"]
        env["BENCH_GC_FREEZE"] = "1000"
    # uvicorn: no per-connection INFO lines (access logs off for every server); then it cannot report the port
    # it picked, so it gets a free one (free_port() races only with other processes binding port 0 meanwhile).
    port: int | None = None
    uvicorn_pattern = r"(?!)(\d+)"  # never matches: wait for the port to accept instead
    if kind in ("uvicorn", "socketio"):
        port = free_port()
    # The flags of deploy/signalr-groups@.service that matter here: no permessage-deflate, no uvicorn pings (the
    # SignalR keep-alive, or engine.io's for socketio, is enough), 1 MiB frames (the proxy flags: no proxy here).
    uvicorn_flags = [
        "--host", "127.0.0.1", "--port", str(port), "--ws-per-message-deflate", "false", "--ws-ping-interval", "0",
        "--ws-max-size", "1048576", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "bench.asgi:application", *uvicorn_flags, *lean_ws]
        pattern = uvicorn_pattern
    elif kind == "socketio":
        command = [sys.executable, "-m", "uvicorn", "bench.servers.sio:app", *uvicorn_flags]
        pattern = uvicorn_pattern
    elif kind == "daphne":
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "bench.asgi:application"]
        pattern = r"Listening on TCP address 127\.0\.0\.1:(\d+)"
    elif kind in ("raw_ws", "raw_ws-keepalive"):
        command = [sys.executable, "-m", "bench.servers.raw_ws", "--port", "0"]
        command += ["--keepalive"] if kind == "raw_ws-keepalive" else []
        pattern = r"listening on 127\.0\.0\.1:(\d+)"
    elif kind in ("node-ws", "node-socketio"):
        if not (ROOT / "bench" / "node_modules" / "socket.io").is_dir():
            raise RuntimeError("bench/node_modules is missing: bash bench/run.sh installs bench/package.json")
        # Node starts its V8 and libuv threads at once: taskset pins every one from exec on (Process pins later).
        pin = (
            ["taskset", "-c", str(core)] if core is not None and pinning_available() and shutil.which("taskset") else []
        )
        script = "node_ws.js" if kind == "node-ws" else "node_sio.js"
        command = [*pin, "node", str(ROOT / "bench" / "servers" / script), "--port", "0"]
        pattern = r"listening on 127\.0\.0\.1:(\d+)"
    else:
        raise ValueError(kind)
    return Process(command, pattern, env, core, kind, port)


def start_redis() -> Process:
    """A private redis-server on a free loopback port (no persistence), on the client's core."""
    port = free_port()
    command = [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--loglevel", "notice",
    ]  # fmt: skip
    return Process(command, r"port=(\d+)\.[\s\S]*Ready to accept connections", dict(os.environ), CLIENT_CORE, "redis")
