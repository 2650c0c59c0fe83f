"""The handshake is answered only once the connection is reachable: a client's start() never races it."""

from __future__ import annotations

import asyncio

from django.test import override_settings

from signalr_groups import Hub, get_hub_context, hub_method
from signalr_groups.lifetime.managers import get_manager
from tests.communicator import FakeUser, HubClient
from tests.hubs import InteropHub


async def test_a_user_send_right_after_the_handshake_arrives():
    client = HubClient(user=FakeUser("hana"))
    await client.connect()  # returns at the handshake answer: nothing else awaited
    try:
        manager = get_manager("interop")
        assert manager is not None and "hana" in manager.users  # registered before the answer
        await get_hub_context(InteropHub).clients.user("hana").send("Now", 1)
        assert await client.receive_record() == {"type": 1, "target": "Now", "arguments": [1]}
    finally:
        await client.disconnect()


async def test_user_scoped_groups_are_joined_before_the_handshake_answer(transactional_db):
    from django.contrib.auth import get_user_model

    from signalr_groups.models import UserGroupMembership

    user = await get_user_model().objects.acreate(username="ines")
    await UserGroupMembership.objects.acreate(hub="interop", group="stored-room", user_identifier="ines")
    client = HubClient(user=user)
    await client.connect()
    try:
        await get_hub_context(InteropHub).clients.group("stored-room").send("Stored", 2)
        assert await client.receive_record() == {"type": 1, "target": "Stored", "arguments": [2]}
        assert await get_hub_context(InteropHub).groups.get_user_groups("ines") == ["stored-room"]
    finally:
        await client.disconnect()


class ThreadAbortHub(Hub):
    """A plain ``def`` method (run in a worker thread) that aborts its own connection."""

    hub_name = "thread-abort"

    @hub_method
    def leave_now(self) -> str:
        self.context.abort()
        return "after abort"  # runs (abort() no longer raises in a thread); the closing connection drops it


async def test_abort_from_a_plain_def_method_closes_the_connection(caplog):
    client = HubClient(hub=ThreadAbortHub, path="/thread-abort")
    await client.connect()
    await client.send_record({"type": 1, "invocationId": "1", "target": "LeaveNow", "arguments": []})
    assert await client.receive_record() == {"type": 7, "allowReconnect": False}
    assert await client.communicator.receive_output(5) == {"type": "websocket.close", "code": 1000}
    for _ in range(50):  # the connection's task ends by itself, without any client input
        if client.communicator.future.done():
            break
        await asyncio.sleep(0.02)
    assert client.communicator.future.done()
    assert "no running event loop" not in caplog.text


async def test_registration_that_hangs_is_bounded_by_the_handshake_timeout(monkeypatch):
    from signalr_groups.user_groups import UserGroups

    async def hang(*args, **kwargs):
        await asyncio.sleep(3600)

    monkeypatch.setattr(UserGroups, "on_registered", hang)
    with override_settings(
        SIGNALR_GROUPS={"HANDSHAKE_TIMEOUT": 0.3, "USER_ID_PROVIDER": "signalr_groups.users.username_user_id"}
    ):
        client = HubClient(user=FakeUser("ivan"))
        await client.connect()  # answered after the bound, then closed so that the client retries
        await client.assert_closed("Connection closed with an error. The server cannot reach its channel layer; retry.")
