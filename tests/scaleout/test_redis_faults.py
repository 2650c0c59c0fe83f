"""Issue 5, faults: Redis unreachable at start-up, and Redis SIGKILLed and restarted empty mid-run.

Each test runs its own redis-server on a fixed loopback port (so that it can be started late, or
restarted where the servers expect it) and its own daphne processes, all stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from signalr_groups import get_hub_context
from signalr_groups.presence import GroupMembers
from tests.hubs import InteropHub
from tests.live import InvocationError, NodeDriver, RedisServer, ServerProcess, free_port, received
from tests.scaleout.crossing import Crossing, records
from tests.tcp_proxy import PartitionProxy

pytestmark = pytest.mark.timeout(120)

LAYERS = ["pubsub", "core"]
HANDSHAKE = '{"protocol":"json","version":1}\x1e'
RS = "\x1e"
#: The issue's bound on recovery after Redis is back (the brief's "within a bounded wait").
RECOVERY = 15.0


def _server(tmp_path: Path, name: str, redis: RedisServer, layer: str, kind: str = "daphne") -> ServerProcess:
    env = {"SIGNALR_TEST_REDIS_URL": redis.url, "SIGNALR_TEST_REDIS_LAYER": layer}
    db = str(settings.DATABASES["default"]["NAME"])
    return ServerProcess(tmp_path / f"{name}.log", db, server=kind, extra_env=env)


def _hub_settings(redis: RedisServer, layer: str) -> dict[str, Any]:
    return {**settings.SIGNALR_GROUPS, "REDIS_URL": redis.url, "REDIS_LAYER": layer}


@pytest.fixture
def redis(tmp_path, request) -> Iterator[RedisServer]:
    """A redis-server on a fixed free port, not started yet (persistent when the test asks: ``data``)."""
    persistent = getattr(request, "param", "empty") == "data"
    server = RedisServer(free_port(), tmp_path, persistent=persistent)
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- a raw client (to read the Close record)


def _negotiate(server: ServerProcess) -> dict[str, Any]:
    request = urllib.request.Request(server.http_url + "/interop/negotiate?negotiateVersion=1", data=b"")
    with urllib.request.urlopen(request, timeout=15) as response:
        return dict(json.loads(response.read()))


async def _first_close_or_completion(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    async for record in records(ws, timeout):
        if record["type"] in (3, 7):
            return dict(record)
    raise AssertionError("unreachable")


async def _open(server: ServerProcess, token: str | None = None) -> tuple[Any, ClientConnection, str]:
    """Negotiate (unless ``token`` is given, or ``""`` to skip negotiation) and open the socket."""
    body = {"connectionToken": token, "connectionId": ""}
    if token is None:
        body = await asyncio.to_thread(_negotiate, server)
    query = f"?id={body['connectionToken']}" if body["connectionToken"] else ""
    opener = connect(f"{server.ws_url}/interop{query}", proxy=None, open_timeout=15, close_timeout=1)
    ws = await opener.__aenter__()
    await ws.send(HANDSHAKE)
    assert await asyncio.wait_for(ws.recv(), 15) == "{}\x1e"
    return opener, ws, str(body["connectionId"])


async def _invoke(ws: ClientConnection, method: str, *args: Any, timeout: float = 15) -> dict[str, Any]:
    """Invoke and return the Completion (or the Close the server sent instead)."""
    # The server may have closed already (a Close record is then waiting to be read).
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps({"type": 1, "invocationId": "9", "target": method, "arguments": list(args)}) + "\x1e")
    return await _first_close_or_completion(ws, timeout)


# ---------------------------------------------------------------- (a) Redis unreachable at start-up


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_a_server_starts_without_redis_and_recovers_when_it_comes(django_db_setup, redis, tmp_path, layer, kind):
    server = _server(tmp_path, kind, redis, layer, kind)  # nothing listens on redis.port: it must start anyway
    try:
        # A negotiated token cannot be claimed cluster-wide now: refused (fail closed), and left unused.
        token = str((await asyncio.to_thread(_negotiate, server))["connectionToken"])
        with pytest.raises(InvalidStatus):
            await _open(server, token)
        # Without negotiation: the handshake succeeds, then a clear Close that allows reconnecting.
        opener, ws, _connection_id = await _open(server, "")
        try:
            started = time.monotonic()
            record = await _invoke(ws, "Echo", "anyone there?", timeout=30)
            print(f"{layer}: without Redis the client got {record} after {time.monotonic() - started:.1f} s")
            assert record["type"] == 7, f"a connection without Redis must be closed, got {record}"
            assert record.get("allowReconnect") is True
            assert record.get("error"), record
        finally:
            await opener.__aexit__(None, None, None)

        # Redis comes up on that port: a new connection works, and works across processes (this one).
        redis.start()
        with override_settings(SIGNALR_GROUPS=_hub_settings(redis, layer)):
            deadline = time.monotonic() + RECOVERY
            attempts = 0
            while True:
                attempts += 1
                try:
                    opener, ws, connection_id = await _open(server)
                except InvalidStatus:  # Redis not answering this process yet: the token is refused
                    assert time.monotonic() < deadline, f"no working connection {RECOVERY} s after Redis came up"
                    await asyncio.sleep(0.5)
                    continue
                try:
                    record = await _invoke(ws, "JoinGroup", "after-redis")
                    if record["type"] == 3:
                        assert record.get("result") is True, record
                        await get_hub_context(InteropHub).clients.group("after-redis").send("Receive", "ctx", "hi")
                        async for message in records(ws, 10):
                            if message["type"] == 1 and message["target"] == "Receive":
                                assert message["arguments"] == ["ctx", "hi"]
                                break
                        members = await get_hub_context(InteropHub).groups.get_members("after-redis")
                        assert members == GroupMembers(1, frozenset(), 1, True)
                        break
                    assert record.get("allowReconnect") is True, record
                finally:
                    await opener.__aexit__(None, None, None)
                assert time.monotonic() < deadline, f"no working connection {RECOVERY} s after Redis came up"
                await asyncio.sleep(0.5)
            print(f"{layer}: connection attempts after Redis came up: {attempts}")
        # The token refused while Redis was down was left unused: the client may retry with it.
        opener, ws, _connection_id = await _open(server, token)
        await opener.__aexit__(None, None, None)
    finally:
        server.stop()


# ---------------------------------------------------------------- (b) Redis SIGKILLed and restarted mid-run


def _got(node: NodeDriver, name: str) -> Counter[tuple[str, str]]:
    return Counter((str(args[0]), str(args[1])) for args in received(node.collect(name)))


def _wait_for(node: NodeDriver, name: str, wanted: set[tuple[str, str]], timeout: float = 10) -> None:
    node.wait_for(name, lambda ev: wanted <= {(str(a[0]), str(a[1])) for a in received(ev)}, timeout)


# Row 37 (restarted empty) and row 38 (restarted with its data, AOF on), on both layers.
@pytest.mark.parametrize("redis", ["empty", "data"], indirect=True)
@pytest.mark.parametrize("layer", LAYERS)
def test_redis_restart_mid_run_fails_sends_loudly_then_recovers(redis, tmp_path, layer, live_users, node: NodeDriver):
    redis.start()
    servers: list[ServerProcess] = []
    try:
        servers.append(_server(tmp_path, "daphne-a", redis, layer))
        servers.append(_server(tmp_path, "daphne-b", redis, layer))
        a, b = servers
        with override_settings(SIGNALR_GROUPS=_hub_settings(redis, layer)):
            context = get_hub_context(InteropHub).sync
            for name, server, user in (
                ("alice-a", a, "alice"), ("alice-b", b, "alice"), ("bob-a", a, "bob"), ("bob-b", b, "bob"),
            ):  # fmt: skip
                node.connect(name, server.http_url + "/interop", cookie=live_users[user], events=("Receive",))
                assert node.invoke(name, "Echo", "registered") == "registered"
            assert context.groups.add_user_to_group("alice", "team") is True  # user-scoped
            assert node.invoke("bob-b", "JoinGroup", "room") is True  # connection-scoped
            assert node.invoke("alice-a", "JoinGroup", "room") is True
            node.invoke("bob-a", "SendToGroup", "team", "m0")
            for name in ("alice-a", "alice-b"):
                _wait_for(node, name, {("group", "m0")})

            # Redis dies: every send that needs it fails, to the sender, loudly.
            redis.kill()
            started = time.monotonic()
            with pytest.raises(InvocationError) as from_a:
                node.invoke("bob-a", "SendToGroup", "team", "during-a")
            with pytest.raises(InvocationError):
                node.invoke("bob-b", "SendToUser", "alice", "during-b")
            with pytest.raises(Exception) as from_here:  # whatever redis-py raises, it must raise
                context.clients.group("team").send("Receive", "group", "during-here")
            print(
                f"{layer}: during the outage: hub method -> {from_a.value}; hub context -> "
                f"{type(from_here.value).__name__}: {from_here.value} ({time.monotonic() - started:.1f} s for 3 sends)"
            )

            # Redis is back, empty, on the same port: group traffic flows again across processes,
            # through the memberships the processes re-assert (user-scoped and connection-scoped).
            redis.start()
            back = time.monotonic()
            probes = 0
            while True:
                # Probes from A, from B and from here; local deliveries do not count, only crossings.
                probes += 1
                for sender, group, tag in (("bob-a", "team", "a"), ("bob-b", "team", "b"), ("bob-b", "room", "r")):
                    with contextlib.suppress(InvocationError):
                        node.invoke(sender, "SendToGroup", group, f"probe-{tag}-{probes}")
                with contextlib.suppress(Exception):
                    context.clients.group("team").send("Receive", "group", f"probe-h-{probes}")
                time.sleep(0.3)
                crossed = {
                    "alice-a": {("group", f"probe-{tag}-{probes}") for tag in "bhr"},
                    "alice-b": {("group", f"probe-{tag}-{probes}") for tag in "ah"},
                }
                if all(wanted <= set(_got(node, name)) for name, wanted in crossed.items()):
                    break
                assert time.monotonic() - back < RECOVERY, (
                    f"{layer}: no traffic across processes {RECOVERY} s after Redis came back: "
                    f"alice-a {sorted(_got(node, 'alice-a'))}, alice-b {sorted(_got(node, 'alice-b'))}"
                )
            print(
                f"{layer}, Redis restarted {'with its data' if redis.persistent else 'empty'}: group traffic flowed again {time.monotonic() - back:.1f} s after it came back"
            )

            # Now exactly once, from both processes and from here; counts are right again. A send
            # that fails, fails loudly (it may still have reached the sender's local members); none
            # is ever delivered twice.
            failed: set[tuple[str, str]] = set()

            def once(key: tuple[str, str], send: Any, *args: Any) -> None:
                try:
                    send(*args)
                except Exception:
                    failed.add(key)

            def fence(tag: str, send: Any) -> tuple[str, str]:
                for attempt in range(5):  # a fence must get through; each attempt has its own text
                    with contextlib.suppress(Exception):
                        send(f"fence-{tag}-{attempt}")
                        return ("all", f"fence-{tag}-{attempt}")
                    time.sleep(0.2)
                raise AssertionError(f"fence {tag} never got through")

            for seq in range(3):
                once(("group", f"a{seq}"), node.invoke, "bob-a", "SendToGroup", "team", f"a{seq}")
                once(("group", f"b{seq}"), node.invoke, "bob-b", "SendToGroup", "team", f"b{seq}")
                once(("group", f"r{seq}"), node.invoke, "bob-b", "SendToGroup", "room", f"r{seq}")
                once(("group", f"h{seq}"), context.clients.group("team").send, "Receive", "group", f"h{seq}")
            fences = {
                fence("a", lambda text: node.invoke("bob-a", "SendToAll", text)),
                fence("b", lambda text: node.invoke("bob-b", "SendToAll", text)),
                fence("here", lambda text: context.clients.all.send("Receive", "all", text)),
            }
            print(f"{layer}: sends that failed loudly after traffic flowed again: {sorted(failed)}")
            team = {("group", f"{p}{s}") for p in "abh" for s in range(3)}
            room = {("group", f"r{s}") for s in range(3)}
            for name, wanted in (("alice-a", team | room), ("alice-b", team), ("bob-a", set()), ("bob-b", room)):
                _wait_for(node, name, fences)
                got = _got(node, name)
                assert all(got[key] == 1 for key in (wanted - failed) | fences), f"{name}: {sorted(got.items())}"
                assert all(count == 1 for count in got.values()), f"{name} got duplicates: {sorted(got.items())}"
                if name == "alice-b":
                    assert not room & set(got), "alice-b never joined room"
            assert context.groups.get_members("team") == GroupMembers(2, frozenset({"alice"}), 0, True)
            assert context.groups.get_members("room") == GroupMembers(2, frozenset({"alice", "bob"}), 0, True)

            # The user-scoped membership also reaches a new connection (the database kept it).
            node.connect("alice-b2", b.http_url + "/interop", cookie=live_users["alice"], events=("Receive",))
            assert node.invoke("alice-b2", "Echo", "registered") == "registered"
            node.invoke("bob-a", "SendToGroup", "team", "new device")
            _wait_for(node, "alice-b2", {("group", "new device")})
    finally:
        for server in servers:
            server.stop()


# ---------------------------------------------------------------- (c) a partition between the servers and Redis


@pytest.mark.parametrize("layer", LAYERS)
async def test_row42_a_partition_from_redis_gives_errors_not_hangs_and_heals(redis, tmp_path, layer):
    """Both servers reach Redis through a proxy that then drops every byte for a while, then forwards again."""
    redis.start()
    proxy = PartitionProxy(redis.port)
    env = {"SIGNALR_TEST_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", "SIGNALR_TEST_REDIS_LAYER": layer}
    db = str(settings.DATABASES["default"]["NAME"])
    servers = [ServerProcess(tmp_path / f"{name}.log", db, extra_env=env) for name in ("a", "b")]
    try:
        a, b = servers
        async with Crossing(f"{b.ws_url}/interop", f"{a.ws_url}/interop", "partitioned") as crossing:
            assert "error" not in await crossing.send("0", "before")
            await crossing.wait_for("before", 15)  # delivered before the partition starts
            proxy.partition()
            started = time.monotonic()
            during = await crossing.send("1", "during", timeout=30)
            waited = time.monotonic() - started
            print(f"{layer}: a send during the partition failed after {waited:.1f} s: {during.get('error')}")
            assert "error" in during, f"a send during the partition reported success: {during}"
            assert waited < 20, "a send during the partition hung"
            proxy.heal()
            took = await crossing.probe_until_received(45)
            print(f"{layer}: traffic flowed again {took:.1f} s after the partition healed")
        assert crossing.received.count("before") == 1 and crossing.received.count("during") <= 1
        crossing.assert_once_at_most()
    finally:
        for server in servers:
            server.stop()
        proxy.stop()
