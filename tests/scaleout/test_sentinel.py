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
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.live import ServerProcess, free_port, stop_process
from tests.scaleout.test_redis_faults import HANDSHAKE, RS, _call, _completion, _records

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
    received: list[str] = []
    try:
        a, b = servers
        async with (
            connect(f"{b.ws_url}/interop", open_timeout=15) as member,
            connect(f"{a.ws_url}/interop", open_timeout=15) as sender,
        ):
            for ws in (member, sender):
                await ws.send(HANDSHAKE)
                assert await asyncio.wait_for(ws.recv(), 15) == "{}" + RS
            await _call(member, "j", "JoinGroup", "failover")
            assert (await _completion(member, "j", 15)).get("result") is True

            async def listen() -> None:
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    async for record in _records(member, 150):
                        if record.get("target") == "Receive":
                            received.append(str(record["arguments"][1]))

            listener = asyncio.ensure_future(listen())
            await _call(sender, "0", "SendToGroup", "failover", "before")
            assert "error" not in await _completion(sender, "0", 15)

            sentinel_setup.kill_master()
            killed = time.monotonic()
            await asyncio.to_thread(
                _wait, lambda: sentinel_setup.current_master() == sentinel_setup.replica_port, 60, "the failover"
            )
            failed_over = time.monotonic()
            for probe in range(300):
                await _call(sender, f"p{probe}", "SendToGroup", "failover", f"probe-{probe}")
                with contextlib.suppress(AssertionError, TimeoutError):
                    await _completion(sender, f"p{probe}", 15)
                await asyncio.sleep(0.3)
                if any(text.startswith("probe-") for text in received):
                    break
                assert time.monotonic() - failed_over < 60, f"{layer}: no traffic 60 s after the failover"
            print(
                f"{layer}: Sentinel promoted the replica {failed_over - killed:.1f} s after the master died; "
                f"traffic flowed again {time.monotonic() - failed_over:.1f} s after that"
            )
            listener.cancel()
        assert received.count("before") == 1
        assert all(received.count(text) == 1 for text in received), f"duplicates: {received}"
    finally:
        for server in servers:
            server.stop()
