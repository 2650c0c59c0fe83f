"""The fan-out and cross-process commands over a real redis-server, with both channels-redis layers.

Two lifetime managers with separate layer instances stand in for two server processes (the
multi-process proof with two daphne processes belongs to the scale-out work).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.layers import channel_layers
from django.test import override_settings

from signalr_groups import get_hub_context
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.managers import get_manager
from tests.fakes import FakeConnection

pytestmark = pytest.mark.timeout(60)

LAYERS = ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]


class RedisHub(Hub):
    hub_name = "redis-test"


HUB = RedisHub.hub_key()


def _host(url: str) -> dict[str, object]:
    # A socket timeout above RedisChannelLayer's 5 s blocking pop (see check signalr_groups.W004).
    return {"address": url, "socket_timeout": 10}


def _layer_config(backend: str, url: str) -> dict[str, object]:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": [_host(url)], "capacity": 1000}}}


async def _wait(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _tear_down(memberships, *layers) -> None:
    """Disconnect (manager, connection) pairs, then close the layers, in that order."""
    for manager, connection in memberships:
        await manager.disconnect(connection)
    for layer in layers:
        await _close_layer(layer)


async def _close_layer(layer) -> None:
    if hasattr(layer, "flush"):
        await layer.flush()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()
    elif hasattr(layer, "close"):
        await layer.close()


@pytest.mark.parametrize("backend", LAYERS)
async def test_two_processes_over_redis(redis_url, backend):
    from django.utils.module_loading import import_string

    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url)):
        layer_a = channel_layers["default"]
        layer_b = import_string(backend)(hosts=[_host(redis_url)], capacity=1000)  # the "other process"
        here = get_manager(HUB, create=True)
        assert here is not None and here.layer is layer_a
        there = HubLifetimeManager(HUB, layer_b)
        alice_here = FakeConnection("alice-here", "alice")
        alice_there, bob_there = FakeConnection("alice-there", "alice"), FakeConnection("bob-there", "bob")
        try:
            await here.connect(alice_here)
            await there.connect(alice_there)
            await there.connect(bob_there)
            await here.add_local("alice-here", "room")
            await there.add_local("alice-there", "room")
            context = get_hub_context(RedisHub)

            await context.clients.group("room").send("Room", 1)
            await _wait(lambda: alice_there.records and alice_here.records)
            assert bob_there.records == []

            await context.clients.user("alice").send("Private", 2)
            await _wait(lambda: len(alice_there.records) == 2 and len(alice_here.records) == 2)
            assert bob_there.records == []

            # A group change for a connection held by the other process travels as a command and is acknowledged.
            assert await context.groups.add_to_group("bob-there", "vip") is True
            await context.clients.group("vip").send("Vip", 3)
            await _wait(lambda: len(bob_there.records) == 1)
            assert await context.groups.remove_from_group("bob-there", "vip") is True
            assert there.groups.get("vip") is None

            await context.clients.client("bob-there").send("Direct", 4)
            await _wait(lambda: len(bob_there.records) == 2)
            await context.clients.all_except(["alice-there"]).send("AllExcept", 5)
            await _wait(lambda: len(bob_there.records) == 3 and len(alice_here.records) == 3)
            assert len(alice_there.records) == 2

            # Kick from anywhere: the owning process closes the connection.
            assert await context.abort("bob-there", error="Kicked.") is True
            assert bob_there.aborted == [("Kicked.", False)]
            with override_settings(SIGNALR_GROUPS={"GROUP_ACTION_TIMEOUT": 0.5}):
                assert await context.abort("no-such-connection") is False
            await context.clients.client("bob-there").send("AfterTimeout", 6)
            await _wait(lambda: len(bob_there.records) == 4)
        finally:
            await _tear_down([(there, alice_there), (there, bob_there), (here, alice_here)], layer_b, layer_a)


@pytest.mark.parametrize("backend", LAYERS)
async def test_unknown_connection_times_out_as_false(redis_url, backend):
    settings = {"USER_ID_PROVIDER": "signalr_groups.users.username_user_id", "GROUP_ACTION_TIMEOUT": 0.3}  # fmt: skip
    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url), SIGNALR_GROUPS=settings):
        layer = channel_layers["default"]
        here = get_manager(HUB, create=True)
        assert here is not None
        connection = FakeConnection("only")
        try:
            await here.connect(connection)
            assert await get_hub_context(RedisHub).groups.add_to_group("nobody", "g") is False
        finally:
            await _tear_down([(here, connection)], layer)


async def test_pubsub_reply_channels_are_released(redis_url):
    """Each remote group action uses a reply channel; on the pub/sub layer it must be unsubscribed after."""
    backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
    from django.utils.module_loading import import_string

    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url)):
        layer_a = channel_layers["default"]
        layer_b = import_string(backend)(hosts=[_host(redis_url)], capacity=1000)
        here = get_manager(HUB, create=True)
        assert here is not None
        there = HubLifetimeManager(HUB, layer_b)
        local, remote = FakeConnection("local"), FakeConnection("remote")
        try:
            await here.connect(local)
            await there.connect(remote)
            groups = get_hub_context(RedisHub).groups
            assert await groups.add_to_group("remote", "warmup") is True
            subscribed = len(layer_a.channels)
            for index in range(20):
                assert await groups.add_to_group("remote", f"g{index}") is True
            assert len(layer_a.channels) == subscribed
            assert set(there.registry.groups_of("remote")) == {"warmup", *(f"g{i}" for i in range(20))}
        finally:
            await _tear_down([(there, remote), (here, local)], layer_b, layer_a)


@pytest.mark.parametrize("backend", LAYERS)
async def test_revocations_wait_for_every_process_holding_the_user(redis_url, backend):
    from django.utils.module_loading import import_string

    from signalr_groups.access.grant_changes import publish_group_access
    from signalr_groups.access.revocation import account_group
    from signalr_groups.backplane.rpc import layer_group_quorum

    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url)):
        layer_a = channel_layers["default"]
        layer_b = import_string(backend)(hosts=[_host(redis_url)], capacity=1000)
        here = get_manager(HUB, create=True)
        assert here is not None
        there = HubLifetimeManager(HUB, layer_b)
        phone, laptop = FakeConnection("phone", "ann", "42"), FakeConnection("laptop", "ann", "42")
        try:
            empty = await layer_group_quorum(layer_a, account_group("42"))
            assert empty is not None and empty.empty
            await here.connect(phone)
            await there.connect(laptop)
            quorum = await layer_group_quorum(layer_a, account_group("42"))
            assert quorum is not None
            if "pubsub" in backend:
                assert quorum.processes == 2
            else:
                assert here.channel_name is not None and there.channel_name is not None
                assert quorum.channels == frozenset({here.channel_name, there.channel_name})
            started = time.monotonic()
            await publish_group_access("42", HUB, [], "revoked")  # waits for both processes' acks
            assert time.monotonic() - started < 1.0
        finally:
            await _tear_down([(there, laptop), (here, phone)], layer_b, layer_a)


class RestrictedRedisHub(Hub):
    hub_name = "redis-test"
    restricted_groups = ("vip",)


class OtherRedisHub(Hub):
    hub_name = "redis-test-other"


@pytest.mark.parametrize("backend", LAYERS)
async def test_a_revocation_returns_only_after_the_other_process_applied_it(redis_url, backend):
    """Process A runs two hubs with the user's connections, process B one: acks are counted per
    member (channel, or pub/sub subscriber), so A's two managers cannot stand in for B."""
    from django.utils.module_loading import import_string

    from signalr_groups.access.grant_changes import publish_group_access

    with override_settings(CHANNEL_LAYERS=_layer_config(backend, redis_url)):
        layer_a = channel_layers["default"]
        layer_b = import_string(backend)(hosts=[_host(redis_url)], capacity=1000)
        here = get_manager(HUB, create=True)
        here_other = get_manager(OtherRedisHub.hub_key(), create=True)
        assert here is not None and here_other is not None
        there = HubLifetimeManager(HUB, layer_b)
        a1, a2 = FakeConnection("a1", "ann", "7"), FakeConnection("a2", "ann", "7")
        b1 = FakeConnection("b1", "ann", "7")
        b1.hub = RestrictedRedisHub
        try:
            await here.connect(a1)
            await here_other.connect(a2)
            await there.connect(b1)
            there.registry.join("b1", "vip")  # b1 holds a restricted group in process B
            for _ in range(20):
                await publish_group_access("7", HUB, [], "revoked")
                assert not there.registry.is_member("b1", "vip"), "returned before process B applied it"
                there.registry.join("b1", "vip")
        finally:
            await _tear_down([(there, b1), (here_other, a2), (here, a1)], layer_b, layer_a)
