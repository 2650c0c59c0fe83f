"""Access to the configured channel layer, and what we may know about who listens on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Quorum:
    """Who must acknowledge a message to a layer group: these channels, or this many processes."""

    channels: frozenset[str] | None = None
    processes: int | None = None

    @property
    def empty(self) -> bool:
        """Nobody is in the group."""
        return not self.channels and not self.processes

    def satisfied(self, channels: set[str], processes: set[str]) -> bool:
        """Whether the acknowledgements received so far cover the quorum."""
        if self.channels is not None:
            return self.channels <= channels
        return len(processes) >= (self.processes or 0)


async def layer_group_quorum(layer: Any, group: str) -> Quorum | None:
    """The members of a layer group that must acknowledge a revocation; None if the layer cannot tell.

    The in-memory layer and channels-redis' ``RedisChannelLayer`` know the member channels (its
    group's sorted set); ``RedisPubSubChannelLayer`` only knows how many processes subscribed
    (``PUBSUB NUMSUB``), so acknowledgements are then counted per process.
    """
    if isinstance(layer, InMemoryChannelLayer):
        return Quorum(channels=frozenset(layer.groups.get(group, {})))
    kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
    try:
        if kind == "channels_redis.core.RedisChannelLayer":
            connection = layer.connection(layer.consistent_hash(group))
            minimum = int(time.time()) - layer.group_expiry
            names = await connection.zrangebyscore(layer._group_key(group), f"({minimum}", "+inf")
            return Quorum(channels=frozenset(name.decode() if isinstance(name, bytes) else name for name in names))
        if kind == "channels_redis.pubsub.RedisPubSubChannelLayer":
            loop_layer = layer._get_layer()
            channel = loop_layer._get_group_channel_name(group)
            shard = loop_layer._get_shard(channel)
            shard._ensure_redis()
            counts = await shard._redis.pubsub_numsub(channel)
            return Quorum(processes=int(counts[0][1]) if counts else 0)
    except Exception:
        return None
    return None
