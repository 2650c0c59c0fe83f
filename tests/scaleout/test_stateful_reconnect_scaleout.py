"""Stateful reconnect when the client's new socket reaches the other process (no sticky sessions), on Redis.

The official client connects through a loopback TCP proxy to process A; the proxy is then
pointed at process B and drops the socket. The client's reconnect lands on B, which bridges it to
A (where the connection, its groups and its buffers live): every message arrives exactly once,
in order, on the same connection id. When A is gone, B refuses and the client reconnects normally.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.live import NodeDriver, ServerProcess, received
from tests.tcp_proxy import PartitionProxy

pytestmark = pytest.mark.timeout(120)

SETTINGS = {"ALLOW_STATEFUL_RECONNECTS": True, "DISCONNECT_TIMEOUT": 5, "GROUP_ACTION_TIMEOUT": 2}


@pytest.fixture(params=["daphne", "uvicorn"])
def pair(request, django_db_setup, redis_url, tmp_path_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Processes A and B on one Redis, allowing stateful reconnect."""
    logdir = tmp_path_factory.mktemp(f"stateful-pair-{request.param}")
    env = {
        "SIGNALR_TEST_REDIS_URL": redis_url,
        "SIGNALR_TEST_SETTINGS": json.dumps(SETTINGS),
        "SIGNALR_TEST_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    db = str(settings.DATABASES["default"]["NAME"])
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(logdir / f"{name}.log", db, server=request.param, extra_env=env))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def proxy(pair) -> Iterator[PartitionProxy]:
    """A loopback TCP proxy, first in front of process A."""
    tcp_proxy = PartitionProxy(pair[0].port)
    yield tcp_proxy
    tcp_proxy.stop()


def _sequence(events: list[dict[str, Any]]) -> list[int]:
    return [json.loads(args[1])["seq"] for args in received(events) if args[0] == "group"]


def test_reconnect_on_the_other_process_keeps_every_message(pair, proxy, live_users, node: NodeDriver):
    """300 numbered messages each way; the socket is cut and comes back through process B, twice."""
    a, b = pair
    count = 300
    node.connect("peer", b.http_url + "/interop", cookie=live_users["bob"])
    connection_id = node.connect(
        "client", f"http://127.0.0.1:{proxy.port}/interop", cookie=live_users["alice"], stateful=True,
        reconnect=[0, 200, 500, 1000],
    )  # fmt: skip
    assert node.invoke("client", "JoinGroup", "down") is True
    assert node.invoke("peer", "JoinGroup", "up") is True
    node.call("spam", name="peer", method="SendToGroup", group="down", count=count, interval=8)
    node.call("spam", name="client", method="SendToGroup", group="up", count=count, interval=8)
    time.sleep(0.7)
    proxy.target_port = b.port
    proxy.cut()  # the client's new socket reaches B, which bridges it to A
    time.sleep(1.0)
    proxy.cut()  # and once more: B again, a new bridge

    node.wait_for("client", lambda events: len(_sequence(events)) >= count, timeout=30)
    node.wait_for("peer", lambda events: len(_sequence(events)) >= count, timeout=30)
    time.sleep(0.5)
    client_events = node.collect("client")
    assert _sequence(client_events) == list(range(count)), "server -> client: lost, duplicated or reordered"
    assert _sequence(node.collect("peer")) == list(range(count)), "client -> server: lost, duplicated or reordered"
    assert not received(client_events, "__reconnecting__")
    assert node.invoke("client", "GetConnectionId") == connection_id
    assert b.log().count("signalr_groups: bridging") >= 2, b.log()[-3000:]


def test_owner_gone_means_a_normal_reconnect(pair, proxy, live_users, node: NodeDriver):
    """Process A is killed: B finds no owner, refuses, and the client reconnects normally to B (a new id)."""
    a, b = pair
    first_id = node.connect(
        "client", f"http://127.0.0.1:{proxy.port}/interop", cookie=live_users["alice"], stateful=True,
        reconnect=[0, 500, 1000],
    )  # fmt: skip
    proxy.target_port = b.port
    a.kill()
    events = node.wait_for("client", lambda events: bool(received(events, "__reconnected__")), timeout=30)
    assert received(events, "__reconnecting__")
    (reconnected,) = received(events, "__reconnected__")
    assert reconnected[0] != first_id
    assert node.invoke("client", "GetConnectionId") == reconnected[0]
