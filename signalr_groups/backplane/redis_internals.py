"""Every use of channels-redis internals, in one adapter.

Channels' layer API cannot say who is in a group, but two answers depend on it: how many
processes must acknowledge a revocation or a member count (a *quorum*), and which channels of
dead processes ``RedisChannelLayer`` still keeps in its groups. channels-redis knows both, behind
private names. This module is the only place that touches them; :func:`check_compatible` (run by
a system check and by the test suite) names whatever the installed channels-redis no longer has,
and a missing name at run time raises :class:`ChannelsRedisIncompatibleError` instead of turning
into a silent timeout.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Final

from signalr_groups.exceptions import SignalRGroupsError

#: What this adapter uses, by class: (module, class name) -> attribute names.
REQUIRED: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("channels_redis.core", "RedisChannelLayer"): ("_group_key", "consistent_hash", "connection"),
    ("channels_redis.pubsub", "RedisPubSubChannelLayer"): ("_get_layer",),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer"): ("_get_group_channel_name", "_get_shard"),
    ("channels_redis.pubsub", "RedisSingleShardConnection"): ("_ensure_redis",),
}


class ChannelsRedisIncompatibleError(SignalRGroupsError):
    """The installed channels-redis lacks an internal name this adapter relies on."""


def missing_internals() -> list[str]:
    """The ``module.Class.name`` entries of :data:`REQUIRED` that the installed channels-redis lacks.

    Empty when channels-redis is not installed (nothing uses the adapter then).
    """
    missing: list[str] = []
    for (module_name, class_name), names in REQUIRED.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []
        klass = getattr(module, class_name, None)
        if klass is None:
            missing.append(f"{module_name}.{class_name}")
            continue
        missing.extend(f"{module_name}.{class_name}.{name}" for name in names if not hasattr(klass, name))
    return missing


def check_compatible() -> None:
    """Raise :class:`ChannelsRedisIncompatibleError` naming what the installed channels-redis lacks."""
    missing = missing_internals()
    if missing:
        raise ChannelsRedisIncompatibleError(
            "signalr_groups needs channels-redis internals that this version lacks: " + ", ".join(missing)
        )


def _incompatible(exc: Exception) -> ChannelsRedisIncompatibleError:
    return ChannelsRedisIncompatibleError(f"channels-redis changed its internals ({exc!r}); see missing_internals()")


async def core_group_members(layer: Any, group: str) -> frozenset[str]:
    """The channels in a ``RedisChannelLayer`` group (its sorted set, members not yet expired)."""
    try:
        connection = layer.connection(layer.consistent_hash(group))
        key = layer._group_key(group)
    except (AttributeError, TypeError) as exc:
        raise _incompatible(exc) from exc
    minimum = int(time.time()) - int(layer.group_expiry)
    names = await connection.zrangebyscore(key, f"({minimum}", "+inf")
    return frozenset(name.decode() if isinstance(name, bytes) else str(name) for name in names)


async def pubsub_subscriber_count(layer: Any, group: str) -> int:
    """How many subscribers (one per process and event loop) a ``RedisPubSubChannelLayer`` group has."""
    try:
        loop_layer = layer._get_layer()
        channel = loop_layer._get_group_channel_name(group)
        shard = loop_layer._get_shard(channel)
        shard._ensure_redis()
        redis = shard._redis
    except (AttributeError, TypeError) as exc:
        raise _incompatible(exc) from exc
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


def core_first_connection(layer: Any) -> Any:
    """The layer's own connection to its first host (in the running event loop), for liveness reads."""
    try:
        return layer.connection(0)
    except (AttributeError, TypeError) as exc:
        raise _incompatible(exc) from exc


def pubsub_still_subscribed(layer: Any, channel: str) -> bool:
    """Whether ``layer`` is a ``RedisPubSubChannelLayer`` still subscribed to ``channel`` in this event loop.

    (Its per-loop layer keeps subscribed channels in ``channels``; False for any other layer.)
    """
    if getattr(type(layer), "__module__", "") != "channels_redis.pubsub":
        return False
    try:
        channels = layer._get_layer().channels
    except Exception:
        return False
    return isinstance(channels, dict) and channel in channels
