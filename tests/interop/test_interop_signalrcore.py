"""Interop with signalrcore (threaded client): negotiate v0, handshake version 0 when skipping negotiation."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0


class Client:
    """A started signalrcore connection with queues for results and ``Receive`` events."""

    def __init__(self, url: str, **options: Any) -> None:
        self.connection = HubConnectionBuilder().with_url(url, options=options).build()
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.replies: queue.Queue[Any] = queue.Queue()
        opened = threading.Event()
        self.connection.on_open(opened.set)
        self.connection.on("Receive", self.events.put)
        self.connection.on_error(self.replies.put)  # signalrcore reports Completion errors here
        assert self.connection.start()
        assert opened.wait(WAIT), "signalrcore did not connect"

    def invoke(self, method: str, *args: Any) -> Any:
        self.connection.send(method, list(args), on_invocation=self.replies.put)
        message = self.replies.get(timeout=WAIT)
        error = getattr(message, "error", None)
        if error:
            raise RuntimeError(error)
        return message.result

    def stop(self) -> None:
        # signalrcore's stop() closes its socket and then joins a reader thread that stays blocked
        # in recv() until the next frame arrives (our next keep-alive ping, up to 15 s away). Ask
        # the server to close the connection first, so the reader wakes up at once.
        self.connection.send("AbortMe", [])
        self.connection.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    started: list[Client] = []
    yield started
    for client in started:
        client.stop()


def test_echo_and_identity_with_negotiation(live_server_process, live_users, clients):
    url = live_server_process.http_url + "/interop"
    alice = Client(url, headers={"Cookie": live_users["alice"]})
    clients.append(alice)
    assert alice.invoke("Echo", {"a": [1, "x"]}) == {"a": [1, "x"]}
    assert alice.invoke("GetUserIdentifier") == "alice"
    anonymous = Client(url)
    clients.append(anonymous)
    assert anonymous.invoke("GetUserIdentifier") is None


def test_group_and_user_delivery(live_server_process, live_users, clients):
    url = live_server_process.http_url + "/interop"
    member = Client(url, headers={"Cookie": live_users["bob"]})
    outsider = Client(url)
    clients.extend([member, outsider])
    assert member.invoke("JoinGroup", "café ☕") is True
    outsider.invoke("SendToGroup", "café ☕", "bonjour")
    assert member.events.get(timeout=WAIT) == ["group", "bonjour"]
    outsider.invoke("SendToUser", "bob", "psst")
    assert member.events.get(timeout=WAIT) == ["user", "psst"]
    outsider.invoke("SendToCaller", "marker")
    assert outsider.events.get(timeout=WAIT) == ["caller", "marker"]
    assert outsider.events.empty()


def test_skip_negotiation_uses_handshake_version_0(live_server_process, clients):
    """signalrcore sends {"protocol":"json","version":0} when it skips negotiation: .NET 8+ accepts it, so do we."""
    client = Client(live_server_process.ws_url + "/interop", skip_negotiation=True)
    clients.append(client)
    assert client.invoke("Echo", "v0") == "v0"
    with pytest.raises(RuntimeError, match="Unknown hub method 'Nope'"):
        client.invoke("Nope")
    assert client.invoke("Add", 2, 3) == 5
