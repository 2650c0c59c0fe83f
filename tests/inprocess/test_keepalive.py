"""Keep-alive pings, the client timeout, and the bounded outbox (in-process, timings shortened)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from signalr_groups import get_hub_context
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.server.endpoint import HubConsumer
from tests.hubs import InteropHub

RS = "\x1e"
BASE = {"USER_ID_PROVIDER": "signalr_groups.users.username_user_id"}


async def _open(hub=InteropHub):
    communicator = WebsocketCommunicator(HubConsumer.as_asgi(hub), "/interop")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data='{"protocol":"json","version":1}' + RS)
    assert await communicator.receive_from() == "{}" + RS
    return communicator


@override_settings(SIGNALR_GROUPS={**BASE, "KEEP_ALIVE_INTERVAL": 0.2, "HEARTBEAT_INTERVAL": 0.05})
async def test_server_pings_an_idle_client():
    communicator = await _open()
    try:
        assert await communicator.receive_from(timeout=2) == '{"type":6}' + RS
        assert await communicator.receive_from(timeout=2) == '{"type":6}' + RS
    finally:
        await communicator.disconnect()


@override_settings(SIGNALR_GROUPS={**BASE, "KEEP_ALIVE_INTERVAL": 0.15, "HEARTBEAT_INTERVAL": 0.05})
async def test_no_ping_while_messages_flow():
    communicator = await _open()
    try:
        for _ in range(6):
            await communicator.send_to(text_data='{"type":1,"target":"Echo","arguments":[1],"invocationId":"1"}' + RS)
            assert json.loads((await communicator.receive_from()).rstrip(RS))["type"] == 3
            await asyncio.sleep(0.05)
    finally:
        await communicator.disconnect()


@override_settings(
    SIGNALR_GROUPS={**BASE, "CLIENT_TIMEOUT": 0.3, "KEEP_ALIVE_INTERVAL": 10, "HEARTBEAT_INTERVAL": 0.05}
)
async def test_silent_client_is_closed_after_its_first_ping():
    communicator = await _open()
    try:
        # Before the first ping the client timeout does not run (as on ASP.NET Core).
        assert await communicator.receive_nothing(timeout=0.6)
        await communicator.send_to(text_data='{"type":6}' + RS)
        close = json.loads((await communicator.receive_from(timeout=2)).rstrip(RS))
        assert close["type"] == 7 and close["allowReconnect"] is True
        assert close["error"].startswith("Connection closed with an error.")
        assert await communicator.receive_output(timeout=2) == {"type": "websocket.close", "code": 1000}
    finally:
        await communicator.disconnect()


@override_settings(
    SIGNALR_GROUPS={**BASE, "CLIENT_TIMEOUT": 0.4, "KEEP_ALIVE_INTERVAL": 10, "HEARTBEAT_INTERVAL": 0.05}
)
async def test_client_that_keeps_pinging_stays():
    communicator = await _open()
    try:
        for _ in range(8):
            await communicator.send_to(text_data='{"type":6}' + RS)
            assert await communicator.receive_nothing(timeout=0.1)
    finally:
        await communicator.disconnect()


class SlowSocket:
    """An ASGI peer that stops reading after the handshake, like a client on a stalled network."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.sent: list[dict[str, object]] = []
        self.unblock = asyncio.Event()

    async def receive(self) -> dict[str, object]:
        return await self.incoming.get()

    async def send(self, message: dict[str, object]) -> None:
        if message["type"] == "websocket.send" and message["text"] != "{}" + RS:
            await self.unblock.wait()
        self.sent.append(message)


@override_settings(SIGNALR_GROUPS={**BASE, "OUTBOX_MAX_BYTES": 4000})
async def test_slow_client_overflows_its_outbox_and_is_dropped_others_are_not():
    slow = SlowSocket()
    scope = {"type": "websocket", "path": "/interop", "query_string": b"", "headers": [], "subprotocols": []}
    task = asyncio.ensure_future(HubConsumer.as_asgi(InteropHub)(scope, slow.receive, slow.send))
    await slow.incoming.put({"type": "websocket.connect"})
    await slow.incoming.put({"type": "websocket.receive", "text": '{"protocol":"json","version":1}' + RS})
    healthy = await _open()
    try:
        manager = get_manager(InteropHub.hub_key())
        assert manager is not None
        for _ in range(100):
            if len(manager.connections) == 2:
                break
            await asyncio.sleep(0.01)
        clients = get_hub_context(InteropHub).clients
        for index in range(20):
            await clients.all.send("Receive", "all", f"{index:03d}" + "x" * 500)
        # The healthy client got all 20 messages.
        got: list[str] = []
        while len(got) < 20:
            frame = await communicator_text(healthy)
            got.extend(record for record in frame.split(RS) if record)
        assert [json.loads(record)["arguments"][1][:3] for record in got] == [f"{i:03d}" for i in range(20)]
        # The slow one was dropped from the hub as soon as its outbox passed the bound.
        for _ in range(100):
            if len(manager.connections) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(manager.connections) == 1
        # When the network frees up it gets what was in flight, then a Close that allows a reconnect.
        slow.unblock.set()
        await asyncio.wait_for(task, 10)
        texts = [message["text"] for message in slow.sent if message["type"] == "websocket.send"]
        assert sum(len(str(text)) for text in texts) < 4000 + 1000
        close = json.loads(str(texts[-1]).rstrip(RS))
        assert close["type"] == 7 and close["allowReconnect"] is True
        assert slow.sent[-1] == {"type": "websocket.close", "code": 1000}
    finally:
        slow.unblock.set()
        await healthy.disconnect()
        if not task.done():
            task.cancel()


async def communicator_text(communicator: WebsocketCommunicator) -> str:
    return str(await communicator.receive_from(timeout=2))


@pytest.mark.parametrize("hub", [InteropHub])
async def test_disconnect_cleans_up_the_manager(hub):
    communicator = await _open(hub)
    manager = get_manager(hub.hub_key())
    assert manager is not None and len(manager.connections) == 1
    await communicator.send_to(text_data='{"type":1,"target":"JoinGroup","arguments":["g"],"invocationId":"1"}' + RS)
    await communicator.receive_from()
    assert manager.groups == {"g": set(manager.connections)}
    await communicator.send_to(text_data='{"type":7}' + RS)
    assert await communicator.receive_output(timeout=2) == {"type": "websocket.close", "code": 1000}
    await communicator.disconnect()
    for _ in range(100):
        if not manager.running:
            break
        await asyncio.sleep(0.01)
    assert manager.connections == {} and manager.groups == {} and not manager.running
