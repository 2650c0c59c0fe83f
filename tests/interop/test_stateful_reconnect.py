"""Stateful reconnect with the official client's ``withStatefulReconnect()``, on daphne and on uvicorn.

The client reaches the server through a loopback TCP proxy that can drop its connections (as a
network that fails: no close frame either way). Sequence-numbered senders run both ways while the
socket is cut; every message must arrive exactly once and in order, on the same connection id,
with its groups kept. A reconnect that comes after the window gets a normal reconnect, and both
the client and the hub are told.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.live import NodeDriver, ServerProcess, received
from tests.tcp_proxy import PartitionProxy

pytestmark = pytest.mark.timeout(120)

WINDOW = 3.0
BUFFER = 20_000
SETTINGS = {"ALLOW_STATEFUL_RECONNECTS": True, "DISCONNECT_TIMEOUT": WINDOW, "STATEFUL_RECONNECT_BUFFER_SIZE": BUFFER}


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server process that allows stateful reconnect, with a short reconnect window."""
    log_path = tmp_path_factory.mktemp(f"stateful-{request.param}") / "server.log"
    process = ServerProcess(
        log_path,
        str(settings.DATABASES["default"]["NAME"]),
        server=request.param,
        extra_env={
            "SIGNALR_TEST_SETTINGS": json.dumps(SETTINGS),
            "SIGNALR_TEST_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        },
    )
    yield process
    process.stop()


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[PartitionProxy]:
    """A loopback TCP proxy in front of the server."""
    tcp_proxy = PartitionProxy(server.port)
    yield tcp_proxy
    tcp_proxy.stop()


def _sequence(events: list[dict[str, Any]]) -> list[int]:
    """The ``seq`` numbers of the spam messages received (``Receive("group", '{"seq": n, ...}')``)."""
    return [json.loads(args[1])["seq"] for args in received(events) if args[0] == "group"]


def _resumed(server: ServerProcess) -> int:
    """How many times a connection resumed on a new socket (the server's log, one handler's lines)."""
    return sum(1 for line in server.log().splitlines() if line.startswith("signalr_groups:") and "resumed on a" in line)


def test_every_message_once_in_order_across_dropped_sockets(server, proxy, live_users, node: NodeDriver):
    """Both directions: 300 numbered messages each way while the client's socket is cut twice."""
    count = 300
    via_proxy = f"http://127.0.0.1:{proxy.port}/interop"
    node.connect("peer", server.http_url + "/interop", cookie=live_users["bob"])
    connection_id = node.connect(
        "client", via_proxy, cookie=live_users["alice"], stateful=True, reconnect=[0, 200, 500, 1000]
    )
    assert node.invoke("client", "JoinGroup", "down") is True
    assert node.invoke("peer", "JoinGroup", "up") is True
    resumed_before = _resumed(server)

    node.call("spam", name="peer", method="SendToGroup", group="down", count=count, interval=8)
    node.call("spam", name="client", method="SendToGroup", group="up", count=count, interval=8)
    time.sleep(0.7)
    proxy.cut()
    time.sleep(0.9)
    proxy.cut()

    node.wait_for("client", lambda events: len(_sequence(events)) >= count, timeout=30)
    node.wait_for("peer", lambda events: len(_sequence(events)) >= count, timeout=30)
    time.sleep(0.5)  # anything duplicated would arrive now
    client_events = node.collect("client")
    assert _sequence(client_events) == list(range(count)), "server -> client: lost, duplicated or reordered"
    assert _sequence(node.collect("peer")) == list(range(count)), "client -> server: lost, duplicated or reordered"
    assert not received(client_events, "__spam_error__")
    # The same connection all along, invisible to the app: no reconnecting event, same id, same groups.
    assert not received(client_events, "__reconnecting__")
    assert node.invoke("client", "GetConnectionId") == connection_id
    node.invoke("peer", "SendToGroup", "down", json.dumps({"seq": count}))
    node.wait_for("client", lambda events: _sequence(events)[-1:] == [count])
    assert _resumed(server) - resumed_before == 2, server.log()[-3000:]


def test_a_full_buffer_holds_the_writer_and_a_cut_loses_nothing(server, proxy, live_users, node: NodeDriver):
    """A stream of 30 × 4 KB (six times the 20 KB buffer, which the client frees by acknowledging about
    once a second) through two dropped sockets: every item once, in order."""
    count, size = 30, 4000
    node.connect("client", f"http://127.0.0.1:{proxy.port}/interop", cookie=live_users["alice"], stateful=True)

    def cut_twice() -> None:
        time.sleep(0.5)
        proxy.cut()
        time.sleep(1.2)
        proxy.cut()

    cutter = threading.Thread(target=cut_twice)
    cutter.start()
    started = time.monotonic()
    reply = node.call("stream", name="client", method="Blobs", args=[count, size], streamTimeout=40_000, timeout=60)
    elapsed = time.monotonic() - started
    cutter.join()
    assert reply["ok"], reply
    assert reply["error"] is None and reply["completed"], reply
    assert [item.split(":", 1)[0] for item in reply["items"]] == [str(n) for n in range(count)]
    assert all(len(item) == size + len(f"{n}:") for n, item in enumerate(reply["items"]))
    # 120 KB through a 20 KB buffer that frees about once a second: the writer waited for Acks.
    assert elapsed > 3, f"{elapsed:.1f} s: the server did not wait for the client's acknowledgements"


def test_a_reconnect_after_the_window_is_a_normal_reconnect(server, proxy, live_users, node: NodeDriver):
    """The client comes back too late: refused, so it reconnects normally (a new id); the hub's on_disconnected ran."""
    via_proxy = f"http://127.0.0.1:{proxy.port}/interop"
    node.connect("watcher", server.http_url + "/interop", cookie=live_users["bob"], events=("Lifecycle",))
    node.invoke("watcher", "JoinGroup", "lifecycle-watchers")
    first_id = node.connect("client", via_proxy, cookie=live_users["alice"], stateful=True, reconnect=[0, 500, 1000])
    proxy.delay_new = WINDOW + 2  # the stateful attempt reaches the server after the window
    proxy.cut()
    told = node.wait_for("watcher", lambda events: bool(received(events, "Lifecycle")), timeout=WINDOW + 5)
    (event,) = received(told, "Lifecycle")
    assert event[:2] == ["disconnected", first_id]
    assert "did not reconnect" in event[2]
    proxy.delay_new = 0
    events = node.wait_for("client", lambda events: bool(received(events, "__reconnected__")), timeout=20)
    assert received(events, "__reconnecting__"), "the app must be told the connection was lost"
    (reconnected,) = received(events, "__reconnected__")
    assert reconnected[0] != first_id
    assert node.invoke("client", "GetConnectionId") == reconnected[0]
