"""The channels-redis adapter: everything it reads exists in the installed version, and a missing name is loud."""

from __future__ import annotations

import pytest
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from django.core import checks
from django.test import override_settings

from signalr_groups.backplane import redis_internals
from signalr_groups.backplane.redis_internals import ChannelsRedisIncompatibleError, check_compatible
from signalr_groups.backplane.rpc import layer_group_quorum
from signalr_groups.checks import check_settings

REDIS = "redis://127.0.0.1:1"  # never connected to: the adapter fails before any I/O


def test_the_installed_channels_redis_has_every_internal_the_adapter_reads():
    assert redis_internals.missing_internals() == []
    check_compatible()


def test_a_missing_internal_is_named_by_the_check_and_the_system_check(monkeypatch):
    monkeypatch.delattr(RedisChannelLayer, "_group_key")
    assert redis_internals.missing_internals() == ["channels_redis.core.RedisChannelLayer._group_key"]
    with pytest.raises(ChannelsRedisIncompatibleError, match="_group_key"):
        check_compatible()
    with override_settings(SIGNALR_GROUPS={"REDIS_URL": REDIS}):
        errors = [m for m in check_settings(None) if isinstance(m, checks.Error)]
    assert [error.id for error in errors] == ["signalr_groups.E003"]


async def test_a_missing_internal_raises_instead_of_a_silent_timeout(monkeypatch):
    monkeypatch.delattr(RedisChannelLayer, "_group_key")
    with pytest.raises(ChannelsRedisIncompatibleError):
        await layer_group_quorum(RedisChannelLayer(hosts=[REDIS]), "sgr.group.x")


async def test_the_pubsub_layer_too(monkeypatch):
    monkeypatch.delattr(RedisPubSubLoopLayer, "_get_group_channel_name")
    layer = RedisPubSubChannelLayer(hosts=[REDIS])
    try:
        with pytest.raises(ChannelsRedisIncompatibleError):
            await layer_group_quorum(layer, "sgr.group.x")
    finally:
        await layer.flush()
