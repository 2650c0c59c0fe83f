"""Chaos row 43: Redis Sentinel fails the master over to its replica; the app follows the new master."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.live import ServerProcess, free_port, stop_process
from tests.scaleout.crossing import Crossing

pytestmark = pytest.mark.timeout(180)

MASTER = "mymaster"


def _start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (scripts/test.sh installs it)"
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, f"redis-server {args} exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            assert time.monotonic() < deadline, f"redis-server {args} did not start"
            time.sleep(0.05)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class SentinelSetup:
    """A master, its replica and one sentinel on free loopback ports, each stopped by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        for name in ("master", "replica", "sentinel"):
            (workdir / name).mkdir()
        self.processes["master"] = _start(
            ["--port", str(self.master_port), "--dir", str(workdir / "master"), *base], self.master_port
        )
        self.processes["replica"] = _start(
            ["--port", str(self.replica_port), "--dir", str(workdir / "replica"), *base]
            + ["--replicaof", "127.0.0.1", str(self.master_port)],
            self.replica_port,
        )
        replica = redis.Redis(port=self.replica_port, socket_timeout=2)
        _wait(lambda: replica.info("replication").get("master_link_status") == "up", 20, "the replica to sync")
        config = workdir / "sentinel" / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.processes["sentinel"] = _start([str(config), "--sentinel"], self.sentinel_port)
        _wait(lambda: self.current_master() == self.master_port, 20, "the sentinel to see the master")

    def current_master(self) -> int | None:
        with contextlib.suppress(redis.RedisError):
            sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=2)
            address = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            if address:
                return int(address[1])
        return None

    def kill_master(self) -> None:
        self.processes["master"].kill()
        self.processes["master"].wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)


@pytest.fixture
def sentinel_setup(tmp_path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path)
    try:
        yield setup
    finally:
        setup.stop()


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_row43_the_layer_follows_a_sentinel_failover(sentinel_setup, tmp_path, layer):
    env = {
        "SIGNALR_TEST_REDIS_SENTINELS": f"127.0.0.1:{sentinel_setup.sentinel_port}",
        "SIGNALR_TEST_REDIS_LAYER": layer,
    }
    db = str(settings.DATABASES["default"]["NAME"])
    servers = [ServerProcess(tmp_path / f"{name}.log", db, extra_env=env) for name in ("a", "b")]
    try:
        a, b = servers
        async with Crossing(f"{b.ws_url}/interop", f"{a.ws_url}/interop", "failover") as crossing:
            assert "error" not in await crossing.send("0", "before")
            # A record still in flight when Redis dies may be lost (replication is asynchronous):
            # the failure starts once "before" has arrived.
            await crossing.wait_for("before", 15)
            sentinel_setup.kill_master()
            killed = time.monotonic()
            await asyncio.to_thread(
                _wait, lambda: sentinel_setup.current_master() == sentinel_setup.replica_port, 60, "the failover"
            )
            failed_over = time.monotonic() - killed
            took = await crossing.probe_until_received(60)
            print(
                f"{layer}: Sentinel promoted the replica {failed_over:.1f} s after the master died; "
                f"traffic flowed again {took:.1f} s after that"
            )
        assert crossing.received.count("before") == 1
        crossing.assert_once_at_most()
    finally:
        for server in servers:
            server.stop()
