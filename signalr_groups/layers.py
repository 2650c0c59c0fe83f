"""Access to the configured channel layer, and what we may know about who listens on it."""

from __future__ import annotations

import time
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from signalr_groups.conf import get_hub_settings


def get_layer() -> Any:
    """Return the channel layer named by ``SIGNALR_GROUPS['CHANNEL_LAYER']``, or ``None``."""
    return get_channel_layer(get_hub_settings().channel_layer)


def may_have_other_members(layer: Any, group: str, own_channel: str | None) -> bool:
    """Whether a layer group might hold a channel other than ``own_channel``.

    The in-memory layer lives in this process, so we can look; for any other layer (Redis) we
    must assume other processes listen. This lets a single-process deployment skip the layer
    entirely on the hot path, while a scaled-out one still sends exactly one layer message.
    """
    if isinstance(layer, InMemoryChannelLayer):
        members = layer.groups.get(group)
        if not members:
            return False
        return any(channel != own_channel for channel in members)
    return True


async def layer_group_size(layer: Any, group: str) -> int | None:
    """How many channels (server processes, for our groups) are in a layer group; None if unknown.

    Reads channels-redis' own bookkeeping (the group's sorted set for ``RedisChannelLayer``,
    ``PUBSUB NUMSUB`` for ``RedisPubSubChannelLayer``), so a sender can wait for every member
    process to acknowledge a revocation. Unknown layers answer None: do not wait.
    """
    if isinstance(layer, InMemoryChannelLayer):
        return len(layer.groups.get(group, {}))
    kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
    try:
        if kind == "channels_redis.core.RedisChannelLayer":
            connection = layer.connection(layer.consistent_hash(group))
            minimum = int(time.time()) - layer.group_expiry
            return int(await connection.zcount(layer._group_key(group), minimum, "+inf"))
        if kind == "channels_redis.pubsub.RedisPubSubChannelLayer":
            loop_layer = layer._get_layer()
            channel = loop_layer._get_group_channel_name(group)
            shard = loop_layer._get_shard(channel)
            shard._ensure_redis()
            counts = await shard._redis.pubsub_numsub(channel)
            return int(counts[0][1]) if counts else 0
    except Exception:
        return None
    return None
