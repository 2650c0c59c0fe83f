"""The one switch to Redis, and the channels-redis pitfalls the app handles (with a real redis-server)."""

from __future__ import annotations

import logging
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from signalr_groups.backplane.layer import build_redis_layer, get_layer, redis_client, shared_redis_url
from signalr_groups.backplane.liveness import ALIVE_KEY, DEAD_AFTER, mark_alive
from signalr_groups.backplane.rpc import layer_group_quorum
from signalr_groups.conf import get_hub_settings
from signalr_groups.logfilters import dropped_messages
from tests.scaleout.test_redis_layers import _close_layer

pytestmark = pytest.mark.timeout(60)


def _settings(**values):
    return override_settings(SIGNALR_GROUPS={"USER_ID_PROVIDER": "signalr_groups.users.username_user_id", **values})


def test_redis_url_setting_moves_the_app_to_channels_redis(redis_url):
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    with _settings(REDIS_URL=redis_url):
        layer = get_layer()
        assert isinstance(layer, RedisPubSubChannelLayer)  # the default: see README "Scaling out"
        assert get_layer() is layer  # one per process
        assert shared_redis_url() == redis_url
    with _settings(REDIS_URL=redis_url, REDIS_LAYER="core"):
        layer = get_layer()
        assert isinstance(layer, RedisChannelLayer)
        assert layer.capacity >= 10_000  # one channel carries a whole process's traffic
    with _settings(REDIS_URL=""):
        assert type(get_layer()).__name__ == "InMemoryChannelLayer"
        assert shared_redis_url() is None


def test_redis_url_comes_from_the_environment(monkeypatch, redis_url):
    monkeypatch.setenv("SIGNALR_REDIS_URL", redis_url)
    with override_settings(SIGNALR_GROUPS={}):
        assert get_hub_settings().redis_url == redis_url
    with override_settings(SIGNALR_GROUPS={"REDIS_URL": ""}):  # "" means never
        assert get_hub_settings().redis_url is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"REDIS_URL": "localhost:6379"}, "must be a redis://"),
        ({"REDIS_URL": 6379}, "must be a redis://"),
        ({"REDIS_LAYER": "sentinel"}, "must be one of pubsub, core"),
    ],
)
def test_bad_redis_settings_are_named(values, message):
    with override_settings(SIGNALR_GROUPS=values), pytest.raises(ImproperlyConfigured, match=message):
        get_hub_settings()


async def test_messages_dropped_for_capacity_are_counted_and_logged_at_warning(redis_url, caplog):
    from channels_redis.core import RedisChannelLayer

    # The app lowered channels-redis' logger to INFO so that its over-capacity line reaches the filter.
    assert logging.getLogger("channels_redis.core").getEffectiveLevel() <= logging.INFO
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 10}], capacity=2)
    try:
        channel = await layer.new_channel()
        await layer.group_add("sgr.test.full", channel)
        before = dropped_messages()
        with caplog.at_level(logging.INFO, logger="channels_redis.core"):  # as installed by the app
            for n in range(5):  # nobody receives: the channel holds 2, then the layer skips it
                await layer.group_send("sgr.test.full", {"type": "t", "n": n})
        assert dropped_messages() - before == 3
        warnings = [r for r in caplog.records if r.name == "channels_redis.core" and r.levelno == logging.WARNING]
        assert len(warnings) == 3
        assert "dropped" in warnings[0].getMessage()
        assert "over capacity in group sgr.test.full" in warnings[0].getMessage()
    finally:
        await layer.flush()
        await _close_layer(layer)


async def test_dead_processes_leave_quorums_and_groups(redis_url):
    layer = build_redis_layer(redis_url, "core")
    with _settings(REDIS_URL=redis_url, REDIS_LAYER="core"):
        try:
            live, stale, dead, unknown = [await layer.new_channel() for _ in range(4)]
            for channel in (live, stale, dead, unknown):
                await layer.group_add("sgr.test.alive", channel)
            await mark_alive(live)
            client = redis_client(redis_url)
            now = time.time()
            await client.zadd(ALIVE_KEY, {stale: now - 30, dead: now - DEAD_AFTER - 5})
            quorum = await layer_group_quorum(layer, "sgr.test.alive")
            assert quorum is not None
            # Silent for 30 s: not waited for. Silent past DEAD_AFTER: also removed from the group.
            # Never seen (e.g. Redis restarted empty a moment ago): waited for, to be safe.
            assert quorum.channels == frozenset({live, unknown})
            connection = layer.connection(layer.consistent_hash("sgr.test.alive"))
            members = {m.decode() for m in await connection.zrange(layer._group_key("sgr.test.alive"), 0, -1)}
            assert members == {live, stale, unknown}
        finally:
            await layer.flush()
            await _close_layer(layer)


async def test_a_live_process_removes_dead_processes_channels_from_its_groups(redis_url):
    from signalr_groups.lifetime.managers import get_manager
    from tests.fakes import FakeConnection

    with _settings(REDIS_URL=redis_url, REDIS_LAYER="core"):
        layer = get_layer()
        manager = get_manager("pitfalls-hub", create=True)
        assert manager is not None
        member = FakeConnection("c1", "alice")
        await manager.connect(member)
        try:
            await manager.add_local("c1", "room")
            assert manager.membership is not None
            all_group = manager.membership.all_group
            group = next(name for name in manager.membership.joined if name != all_group and ".group." in name)
            dead = await layer.new_channel()
            await layer.group_add(group, dead)
            await redis_client(redis_url).zadd(ALIVE_KEY, {dead: time.time() - DEAD_AFTER - 1})
            await manager.membership.beat()
            connection = layer.connection(layer.consistent_hash(group))
            members = {m.decode() for m in await connection.zrange(layer._group_key(group), 0, -1)}
            assert members == {manager.channel_name}
        finally:
            await manager.disconnect(member)
            await _close_layer(layer)


@pytest.mark.parametrize(
    ("hosts", "url"),
    [
        ([("127.0.0.1", 6380)], "redis://127.0.0.1:6380"),
        ([{"host": "127.0.0.1", "port": 6381}], "redis://127.0.0.1:6381/0"),
        ([{"address": "redis://127.0.0.1:6382/2"}], "redis://127.0.0.1:6382/2"),
        (["redis://127.0.0.1:6383"], "redis://127.0.0.1:6383"),
    ],
)
def test_the_shared_redis_is_found_in_every_hosts_form_channels_redis_accepts(hosts, url):
    layers = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": hosts}}}
    with override_settings(CHANNEL_LAYERS=layers), _settings(REDIS_URL=""):
        assert shared_redis_url() == url


async def test_a_cleanly_stopped_process_is_dead_at_once_not_unknown(redis_url):
    from signalr_groups.backplane.liveness import mark_gone

    layer = build_redis_layer(redis_url, "core")
    with _settings(REDIS_URL=redis_url, REDIS_LAYER="core"):
        try:
            gone = await layer.new_channel()
            await layer.group_add("sgr.test.gone", gone)
            await mark_alive(gone)
            await mark_gone(gone)
            quorum = await layer_group_quorum(layer, "sgr.test.gone")
            assert quorum is not None and quorum.empty  # not waited for, and pruned from the group
        finally:
            await layer.flush()
            await _close_layer(layer)


async def test_a_redis_outage_never_stops_the_keep_alive_sweep(monkeypatch):
    import asyncio

    from signalr_groups.backplane import membership
    from signalr_groups.lifetime.managers import get_manager
    from tests.fakes import FakeConnection

    monkeypatch.setattr(membership, "ALIVE_INTERVAL", 0.05)
    failures = {"left": 5}

    async def flaky_heartbeat(self) -> None:
        raise ConnectionError("Redis is down")

    async def reassert(self) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("still down")

    monkeypatch.setattr(membership.LayerMembership, "beat", flaky_heartbeat)
    monkeypatch.setattr(membership.LayerMembership, "reassert", reassert)
    with _settings(HEARTBEAT_INTERVAL=0.05):
        manager = get_manager("outage-hub", create=True)
        assert manager is not None
        connection = FakeConnection("c1")
        await manager.connect(connection)
        try:
            await asyncio.sleep(0.6)  # the liveness loop fails and recovers meanwhile
            assert failures["left"] < 5  # recovery was attempted
            assert connection.ticks >= 6  # and the sweep kept its pace (pings, timeouts, expiries)
            assert manager.running
        finally:
            await manager.disconnect(connection)


async def test_a_removal_racing_a_new_connections_join_is_not_undone(transactional_db, monkeypatch):
    from signalr_groups.lifetime.managers import get_manager
    from signalr_groups.models import UserGroupMembership
    from signalr_groups.user_groups import UserGroups
    from tests.fakes import FakeConnection

    await UserGroupMembership.objects.acreate(hub="race-hub", group="project", user_identifier="alice")
    manager = get_manager("race-hub", create=True)
    assert manager is not None
    connection = FakeConnection("c1", "alice")
    await manager.connect(connection)
    original_add = manager.add_local
    extension = manager.extension(UserGroups)
    assert extension is not None

    async def add_after_a_removal(connection_id: str, group: str) -> bool:
        # Another process removes alice from the group after our read, before our join.
        await UserGroupMembership.objects.filter(user_identifier="alice").adelete()
        await extension.apply("alice", group, "remove")
        return await original_add(connection_id, group)

    monkeypatch.setattr(manager, "add_local", add_after_a_removal)
    try:
        await extension.on_registered(connection)
        assert "project" not in manager.registry.groups_of("c1")
    finally:
        await manager.disconnect(connection)
