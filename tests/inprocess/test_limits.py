"""Limits a deployer sets: connections per user, groups per connection (SignalR-shaped refusals)."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import Client, override_settings

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


async def test_invocations_over_the_rate_are_refused_and_do_not_run():
    with _limits(MAX_INVOCATIONS_PER_SECOND=5):
        client = HubClient(user=FakeUser("ria"))
        await client.connect()
        answers = [await client.invoke_record("CountCalls") for _ in range(8)]
        refused = [answer for answer in answers if "error" in answer]
        assert len(refused) >= 2  # a burst of 8 against 5 a second
        assert all(answer["error"] == "Too many invocations: at most 5 a second." for answer in refused)
        ran = [answer["result"] for answer in answers if "error" not in answer]
        assert ran == list(range(1, len(ran) + 1))  # refused calls never ran
        other = HubClient(user=FakeUser("ole"))
        await other.connect()  # another connection has its own budget
        assert await other.invoke("Echo", "fine") == "fine"
        await client.disconnect()
        await other.disconnect()


async def test_anonymous_connections_per_address():
    with _limits(MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS=2):
        first, second = HubClient(), HubClient()
        await first.connect()
        await second.connect()
        third = HubClient()
        await third.connect()
        record = await third.receive_record()
        assert record["type"] == 7 and record["allowReconnect"] is False
        assert "Too many anonymous connections from your address" in record["error"]
        signed_in = HubClient(user=FakeUser("ivy"))  # users are counted by MAX_CONNECTIONS_PER_USER instead
        await signed_in.connect()
        assert await signed_in.invoke("Echo", "in") == "in"
        for client in (first, second, signed_in):
            await client.disconnect()


@pytest.mark.django_db
def test_negotiate_over_the_rate_of_an_address_gets_429():
    client = Client()
    with _limits(MAX_NEGOTIATIONS_PER_SECOND_PER_ADDRESS=3):
        statuses = [client.post("/interop/negotiate?negotiateVersion=1").status_code for _ in range(6)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        refused = client.post("/interop/negotiate?negotiateVersion=1")
        assert refused.status_code == 429 and refused["Retry-After"] == "1"
        other = client.post("/interop/negotiate?negotiateVersion=1", REMOTE_ADDR="127.0.0.2")
        assert other.status_code == 200  # another address has its own budget
    assert client.post("/interop/negotiate?negotiateVersion=1").status_code == 200  # off by default


async def test_leaving_a_thousand_groups_does_not_stall_other_connections():
    with _limits(MAX_GROUPS_PER_CONNECTION=1000):
        busy, other = HubClient(user=FakeUser("max")), HubClient(user=FakeUser("una"))
        await busy.connect()
        await other.connect()
        for start in range(0, 1000, 100):
            for index in range(start, start + 100):
                await busy.send("JoinGroup", f"room-{index}")
            assert await busy.invoke("Echo", start) == start  # the joins before it have run
        disconnecting = asyncio.ensure_future(busy.disconnect())
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await other.invoke("Echo", "meanwhile") == "meanwhile"
        waited = time.monotonic() - started
        await disconnecting
        assert waited < 0.5, f"a call waited {waited:.2f} s while another connection left 1,000 groups"
        await other.disconnect()
