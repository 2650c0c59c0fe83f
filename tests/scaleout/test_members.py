"""``groups.get_members(name)``: who is in a group, counted once per connection and per person, on every process."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.test import override_settings

from signalr_groups import get_hub_context
from signalr_groups.exceptions import InvalidGroupNameError
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.presence import GroupMembers
from tests.communicator import FakeUser, HubClient
from tests.fakes import FakeConnection
from tests.hubs import InteropHub
from tests.scaleout.test_redis_layers import LAYERS, _host, _layer_config, _tear_down

pytestmark = pytest.mark.timeout(60)


class MembersHub(Hub):
    hub_name = "members-test"


async def test_members_in_one_process_count_people_not_tabs():
    context = get_hub_context(InteropHub)
    clients = [
        HubClient(user=FakeUser("alice")),
        HubClient(user=FakeUser("alice")),
        HubClient(user=FakeUser("bob")),
        HubClient(),
    ]
    for client in clients:
        await client.connect()
    try:
        ids = [await client.invoke("GetConnectionId") for client in clients]
        assert await context.groups.get_members("room") == GroupMembers()
        for connection_id in ids:
            assert await context.groups.add_to_group(connection_id, "room") is True
        members = await context.groups.get_members("room")
        assert members.connection_count == 4
        assert members.users == {"alice", "bob"}
        assert members.user_count == 2
        assert members.anonymous_connection_count == 1
        assert members.complete
        await clients[0].disconnect()  # one of alice's tabs closes: she is still there
        members = await context.groups.get_members("room")
        assert (members.connection_count, members.users) == (3, frozenset({"alice", "bob"}))
        await context.groups.remove_from_group(ids[1], "room")
        members = await context.groups.get_members("room")
        assert (members.connection_count, members.users) == (2, frozenset({"bob"}))
    finally:
        for client in clients[1:]:
            await client.disconnect()
    assert await context.groups.get_members("room") == GroupMembers()


async def test_members_reject_a_bad_group_name():
    with pytest.raises(InvalidGroupNameError):
        await get_hub_context(InteropHub).groups.get_members("")


@pytest.mark.parametrize("backend", LAYERS)
async def test_members_are_summed_over_processes(redis_url, backend):
    from django.utils.module_loading import import_string

    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url)):
        layer_a = channel_layers["default"]
        layer_b = import_string(backend)(hosts=[_host(redis_url)], capacity=1000)  # the "other process"
        here = get_manager(MembersHub.hub_key(), create=True)
        assert here is not None
        there = HubLifetimeManager(MembersHub.hub_key(), layer_b)
        alice_here = FakeConnection("alice-here", "alice")
        alice_there, bob_there = FakeConnection("alice-there", "alice"), FakeConnection("bob-there", "bob")
        anonymous_there = FakeConnection("anon-there")
        memberships = [(here, alice_here), (there, alice_there), (there, bob_there), (there, anonymous_there)]
        try:
            for manager, connection in memberships:
                await manager.connect(connection)
                await manager.add_local(connection.connection_id, "room")
            members = await get_hub_context(MembersHub).groups.get_members("room")
            assert members == GroupMembers(4, frozenset({"alice", "bob"}), 1, True)
            # Only the "there" process holds members of this group: it answers alone.
            await here.remove_local("alice-here", "room")
            members = await get_hub_context(MembersHub).groups.get_members("room")
            assert members == GroupMembers(3, frozenset({"alice", "bob"}), 1, True)
            assert await get_hub_context(MembersHub).groups.get_members("empty") == GroupMembers()
            # The sync twin gives the same answer (from a sync view's thread, as under daphne).
            sync_members = await sync_to_async(get_hub_context(MembersHub).sync.groups.get_members)("room")
            assert sync_members.users == {"alice", "bob"}
        finally:
            await _tear_down(list(reversed(memberships)), layer_b, layer_a)
