"""Limits a deployer sets: connections per user, groups per connection (SignalR-shaped refusals)."""

from __future__ import annotations

from django.test import override_settings

from tests.communicator import FakeUser, HubClient


def _limits(**values: int):
    return override_settings(SIGNALR_GROUPS={"USER_ID_PROVIDER": "signalr_groups.users.username_user_id", **values})


async def test_a_user_over_the_connection_limit_gets_a_close_that_says_why():
    with _limits(MAX_CONNECTIONS_PER_USER=2):
        first, second = HubClient(user=FakeUser("lena")), HubClient(user=FakeUser("lena"))
        other = HubClient(user=FakeUser("otto"))
        await first.connect()
        await second.connect()
        await other.connect()  # another user is not affected
        third = HubClient(user=FakeUser("lena"))
        await third.connect()
        assert await third.receive_record() == {
            "type": 7,
            "error": "Too many connections: a user may hold 2 to this hub on a server.",
            "allowReconnect": False,
        }
        await third.assert_closed()
        assert await first.invoke("Echo", "still here") == "still here"
        await second.disconnect()
        fourth = HubClient(user=FakeUser("lena"))
        await fourth.connect()  # room again once one left
        assert await fourth.invoke("Echo", "in") == "in"
        for client in (first, other, fourth):
            await client.disconnect()


async def test_a_connection_over_the_group_limit_gets_an_error_and_keeps_its_groups():
    with _limits(MAX_GROUPS_PER_CONNECTION=3):
        client = HubClient(user=FakeUser("gus"))
        await client.connect()
        for name in ("a", "b", "c"):
            assert await client.invoke("JoinGroup", name) is True
        record = await client.invoke_record("JoinGroup", "d")
        assert "Too many groups: a connection may be in 3 at once." in record["error"]
        assert await client.invoke("JoinGroup", "a") is True  # already a member: not a new group
        assert await client.invoke("LeaveGroup", "a") is True
        assert await client.invoke("JoinGroup", "d") is True
        await client.disconnect()
