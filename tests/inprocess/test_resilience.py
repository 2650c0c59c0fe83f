"""Failures around a connection: the channel layer failing or slow, hub code misbehaving, odd client streams."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.layers import channel_layers
from django.test import override_settings

from signalr_groups import Hub, hub_method
from signalr_groups.lifetime.managers import get_manager
from tests.communicator import FakeUser, HubClient
from tests.fakes import FakeConnection

FLAKY = {"default": {"BACKEND": "tests.layers.FlakyInMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}


@pytest.fixture
def flaky_layer():
    with override_settings(CHANNEL_LAYERS=FLAKY):
        yield channel_layers["default"]


async def test_layer_failure_at_connect_closes_with_reconnect_and_registers_nothing(flaky_layer):
    flaky_layer.fail_add = True
    client = HubClient(user=FakeUser("frank"))
    await client.connect()
    await client.assert_closed("Connection closed with an error. The server cannot reach its channel layer; retry.")
    manager = get_manager("interop")
    assert manager is None or (manager.connections == {} and manager.users == {})


async def test_layer_failure_on_join_fails_the_call_and_changes_nothing(flaky_layer):
    client = HubClient()
    await client.connect()
    try:
        flaky_layer.fail_add = True
        record = await client.invoke_record("JoinGroup", "g")
        assert record["error"] == "An unexpected error occurred invoking 'JoinGroup' on the server."
        manager = get_manager("interop")
        assert manager is not None and manager.groups == {}
        flaky_layer.fail_add = False
        assert await client.invoke("JoinGroup", "g") is True
    finally:
        await client.disconnect()


async def test_layer_failure_on_disconnect_still_cleans_the_registry(flaky_layer):
    client = HubClient(user=FakeUser("gina"))
    await client.connect()
    for group in ("a", "b", "c"):
        assert await client.invoke("JoinGroup", group) is True
    flaky_layer.fail_discard = True
    await client.disconnect()
    manager = get_manager("interop")
    assert manager is not None
    assert (manager.connections, manager.groups, manager.users) == ({}, {}, {})


async def test_concurrent_join_and_leave_keep_layer_membership_true(flaky_layer):
    """First member joins (slow), leaves, and another joins while the leave is in flight."""
    flaky_layer.add_delay, flaky_layer.discard_delay = 0.01, 0.05
    manager = get_manager("race", create=True)
    assert manager is not None
    p, q = FakeConnection("p"), FakeConnection("q")
    await manager.connect(p)
    await manager.connect(q)
    join_p = asyncio.ensure_future(manager.add_local("p", "g"))
    await asyncio.sleep(0.005)
    leave_p = asyncio.ensure_future(manager.remove_local("p", "g"))
    await asyncio.sleep(0.02)  # the join is done, the leave's slow discard is in flight
    join_q = asyncio.ensure_future(manager.add_local("q", "g"))
    await asyncio.gather(join_p, leave_p, join_q)
    layer_group = "sgr.group."
    members = [group for group, channels in flaky_layer.groups.items() if group.startswith(layer_group)]
    assert manager.groups == {"g": {"q"}}
    assert len(members) == 1 and manager.channel_name in flaky_layer.groups[members[0]]
    await manager.disconnect(p)
    await manager.disconnect(q)
    assert not any(group.startswith(layer_group) for group in flaky_layer.groups)


async def test_hub_method_raising_cancelled_error_fails_only_that_call():
    client = HubClient()
    await client.connect()
    try:
        await client.send_text(
            '{"type":1,"target":"RaiseCancelled","arguments":[],"invocationId":"1"}\x1e'
            '{"type":1,"target":"Echo","arguments":[2],"invocationId":"2"}\x1e'
        )
        first, second = await client.receive_records(2)
        assert first == {
            "type": 3,
            "invocationId": "1",
            "error": "An unexpected error occurred invoking 'RaiseCancelled' on the server.",
        }
        assert second == {"type": 3, "invocationId": "2", "result": 2}
    finally:
        await client.disconnect()


async def test_upload_stream_items_for_a_method_without_streams_are_dropped_not_fatal():
    """An upload stream sent to a method that takes none fails the call (as .NET words it); the items the
    client then sends on that stream are dropped until it ends it."""
    client = HubClient()
    await client.connect()
    try:
        await client.send_text(
            '{"type":1,"target":"Echo","arguments":[],"invocationId":"1","streamIds":["7"]}\x1e'
            '{"type":2,"invocationId":"7","item":1}\x1e{"type":3,"invocationId":"7"}\x1e'
        )
        record = await client.receive_record()
        assert record == {
            "type": 3,
            "invocationId": "1",
            "error": "An unexpected error occurred invoking 'Echo' on the server. "
            "HubException: Client sent 1 stream(s), Hub method expects 0.",
        }
        await client.assert_echo()
        # Once completed, the stream id is unknown again: a further item is a protocol error.
        await client.send_text('{"type":2,"invocationId":"7","item":1}\x1e')
        await client.assert_closed(
            "Connection closed with an error. ProtocolError: Received a message for unknown invocation ID '7'."
        )
    finally:
        await client.disconnect()


removed: list[bool] = []


class LeavingHub(Hub):
    hub_name = "leaving"

    @hub_method
    async def join(self, group: str) -> bool:
        return await self.groups.add_to_group(self.context.connection_id, group)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        removed.append(await self.groups.remove_from_group(self.context.connection_id, "room"))


async def test_on_disconnected_runs_while_the_connection_is_still_in_its_groups():
    removed.clear()
    client = HubClient(LeavingHub, "/leaving")
    await client.connect()
    assert await client.invoke("Join", "room") is True
    await client.disconnect()
    assert removed == [True]


slow_leaves: list[str] = []


class SlowLeaveHub(Hub):
    hub_name = "slow-leave"

    @hub_method
    async def join(self, group: str) -> bool:
        return await self.groups.add_to_group(self.context.connection_id, group)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        slow_leaves.append("started")
        await asyncio.sleep(30)


async def test_cancelled_during_slow_on_disconnected_still_leaves_the_hub():
    """daphne cancels an application that outlives application_close_timeout: nothing may stay registered."""
    client = HubClient(SlowLeaveHub, "/slow", user=FakeUser("eve"))
    await client.connect()
    assert await client.invoke("Join", "room") is True
    await client.communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    for _ in range(100):
        if slow_leaves:
            break
        await asyncio.sleep(0.01)
    client.communicator.future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await client.communicator.future
    manager = get_manager("slow-leave")
    assert manager is not None
    assert (manager.connections, manager.groups, manager.users, manager.running) == ({}, {}, {}, False)


class BigResultHub(Hub):
    hub_name = "big-result"

    @hub_method
    async def big(self) -> str:
        return "x" * 20_000


async def test_a_burst_of_large_results_does_not_overflow_a_healthy_outbox():
    """100 invocations answering 20 KB each (2 MB) in one frame: the writer drains between them."""
    client = HubClient(BigResultHub, "/big")
    await client.connect()
    try:
        frame = "".join(f'{{"type":1,"target":"Big","arguments":[],"invocationId":"{i}"}}\x1e' for i in range(100))
        await client.send_text(frame)
        records = await client.receive_records(100, timeout=10)
        assert [record["invocationId"] for record in records] == [str(i) for i in range(100)]
        assert all(len(record["result"]) == 20_000 for record in records)
    finally:
        await client.disconnect()
