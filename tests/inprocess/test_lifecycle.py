"""on_connected / on_disconnected, user-supplied hooks that fail, and user groups for anonymous users."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator
from django.test import override_settings

from signalr_groups import Hub, HubError, hub_method
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.server.endpoint import HubConsumer
from tests.communicator import FakeUser, HubClient

events: list[tuple[str, Any]] = []


class LifecycleHub(Hub):
    hub_name = "lifecycle"

    async def on_connected(self) -> None:
        if self.context.scope.get("query_string") == b"refuse=1":
            raise HubError("not today")
        events.append(("connected", self.context.user_identifier))

    async def on_disconnected(self, exception: BaseException | None) -> None:
        events.append(("disconnected", None if exception is None else type(exception).__name__))

    @hub_method
    async def echo(self, value: Any) -> Any:
        return value


class SyncLifecycleHub(Hub):
    hub_name = "sync-lifecycle"

    def on_connected(self) -> None:  # type: ignore[override]
        events.append(("sync-connected", self.context.connection_id))

    @hub_method
    async def echo(self, value: Any) -> Any:
        return value


async def test_clean_close_gives_no_exception_and_abnormal_close_does():
    events.clear()
    client = HubClient(LifecycleHub, "/lifecycle", user=FakeUser("dana"))
    await client.connect()
    assert await client.invoke("Echo", 1) == 1
    await client.send_record({"type": 7})
    await client.communicator.receive_output(2)
    await client.communicator.wait(2)
    other = HubClient(LifecycleHub, "/lifecycle")
    await other.connect()
    await other.communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await other.communicator.wait(2)
    assert events == [
        ("connected", "dana"),
        ("disconnected", None),
        ("connected", None),
        ("disconnected", "ConnectionClosedError"),
    ]


async def test_on_connected_failure_closes_without_reconnect():
    events.clear()
    communicator = WebsocketCommunicator(HubConsumer.as_asgi(LifecycleHub), "/lifecycle?refuse=1")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data='{"protocol":"json","version":1}\x1e')
    assert await communicator.receive_from() == "{}\x1e"
    assert (
        await communicator.receive_from()
        == '{"type":7,"error":"Connection closed with an error.","allowReconnect":false}\x1e'
    )
    assert await communicator.receive_output(2) == {"type": "websocket.close", "code": 1000}
    await communicator.wait(2)
    manager = get_manager(LifecycleHub.hub_key())
    assert manager is None or not manager.connections


async def test_sync_lifecycle_hooks_run_in_a_thread():
    events.clear()
    client = HubClient(SyncLifecycleHub, "/sync")
    await client.connect()
    assert await client.invoke("Echo", "x") == "x"
    await client.disconnect()
    assert events and events[0][0] == "sync-connected"


def _broken_provider(user: Any, scope: dict[str, Any]) -> str | None:
    raise RuntimeError("provider bug")


@override_settings(SIGNALR_GROUPS={"USER_ID_PROVIDER": "tests.inprocess.test_lifecycle._broken_provider"})
async def test_a_failing_user_id_provider_refuses_the_connection():
    communicator = WebsocketCommunicator(HubConsumer.as_asgi(LifecycleHub), "/lifecycle")
    connected, _ = await communicator.connect()
    assert not connected


async def test_anonymous_connections_are_in_no_user_group():
    client = HubClient(LifecycleHub, "/lifecycle")
    named = HubClient(LifecycleHub, "/lifecycle", user=FakeUser("erin"))
    await client.connect()
    await named.connect()
    try:
        manager = get_manager(LifecycleHub.hub_key())
        assert manager is not None
        assert set(manager.users) == {"erin"}
    finally:
        await client.disconnect()
        await named.disconnect()


async def test_a_sync_hub_method_can_send_through_async_to_sync():
    client = HubClient()
    await client.connect()
    try:
        await client.send_text('{"type":1,"target":"SyncSendToCaller","arguments":["hi"],"invocationId":"1"}\x1e')
        records = await client.receive_records(2)
        assert records == [
            {"type": 1, "target": "Receive", "arguments": ["sync-caller", "hi"]},
            {"type": 3, "invocationId": "1", "result": "sent"},
        ]
    finally:
        await client.disconnect()


async def test_hub_context_abort_closes_a_local_connection_for_good():
    from signalr_groups import get_hub_context
    from tests.hubs import InteropHub

    client = HubClient()
    await client.connect()
    connection_id = await client.invoke("GetConnectionId")
    context = get_hub_context(InteropHub)
    assert await context.abort(connection_id, error="You have been disconnected.") is True
    assert await client.receive_record() == {"type": 7, "error": "You have been disconnected.", "allowReconnect": False}
    assert await client.communicator.receive_output(2) == {"type": "websocket.close", "code": 1000}
    await client.communicator.wait(2)
    assert await context.abort(connection_id) is False


async def test_a_closed_connection_is_freed_by_reference_counting_alone():
    """Its parts point back at it; closing breaks those cycles, so no collector (nor a gc.freeze()) is needed."""
    import gc

    from signalr_groups.server.connection import HubConnection

    def live() -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is HubConnection)

    gc.collect()
    before = live()
    gc.disable()
    try:
        for _ in range(3):
            client = HubClient(LifecycleHub, "/lifecycle")
            await client.connect()
            assert await client.invoke("Echo", 1) == 1
            assert live() == before + 1
            await client.send_record({"type": 7})  # the client's Close message
            await client.communicator.receive_output(2)
            await client.communicator.wait(2)
        manager = get_manager(LifecycleHub.hub_key())
        assert manager is None or not manager.connections
        assert live() == before  # freed at once, with the collector off
    finally:
        gc.enable()
