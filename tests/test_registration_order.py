"""The handshake is answered only once the connection is reachable: a client's start() never races it."""

from __future__ import annotations

from signalr_groups import get_hub_context
from signalr_groups.lifetime import get_manager
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
