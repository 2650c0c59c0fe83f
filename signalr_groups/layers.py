"""Access to the configured channel layer, and what we may know about who listens on it."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from signalr_groups.conf import get_hub_settings

logger = logging.getLogger(__name__)

#: Capacity of each channel of a RedisChannelLayer built from REDIS_URL: a process's one channel
#: carries every message for that process, so the default of 100 is far too small.
REDIS_CORE_CAPACITY: Final = 10_000
#: The sorted set of live manager channels (score: last heartbeat, Unix time).
ALIVE_KEY: Final = "sgr.alive"
#: How often a manager records that it is alive (seconds).
ALIVE_INTERVAL: Final = 5.0
#: A manager channel silent this long is left out of acknowledgement quorums (seconds).
ALIVE_WINDOW: Final = 15.0
#: A manager channel silent this long is removed from the layer groups it was in (seconds).
DEAD_AFTER: Final = 60.0

_redis_layers: dict[tuple[str, str], Any] = {}
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def get_layer() -> Any:
    """Return the channel layer the app uses, or ``None``.

    With ``SIGNALR_GROUPS['REDIS_URL']`` (or ``$SIGNALR_REDIS_URL``) it is a channels-redis layer
    built for that URL (one per process, as Channels keeps its own); otherwise the layer named by
    ``SIGNALR_GROUPS['CHANNEL_LAYER']`` in ``CHANNEL_LAYERS``.
    """
    hub_settings = get_hub_settings()
    if hub_settings.redis_url:
        key = (hub_settings.redis_url, hub_settings.redis_layer)
        layer = _redis_layers.get(key)
        if layer is None:
            layer = _redis_layers[key] = build_redis_layer(*key)
        return layer
    return get_channel_layer(hub_settings.channel_layer)


def build_redis_layer(url: str, kind: str) -> Any:
    """A channels-redis layer for ``url``: ``"pubsub"`` or ``"core"`` (configured as the README advises)."""
    if kind == "core":
        from channels_redis.core import RedisChannelLayer

        # A socket timeout above the layer's 5 s blocking pop (see check W004).
        return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 10}], capacity=REDIS_CORE_CAPACITY)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    # Timeouts, so that a send during a network partition fails instead of hanging.
    return RedisPubSubChannelLayer(hosts=[{"address": url, "socket_connect_timeout": 5, "socket_timeout": 10}])


def is_redis_core(layer: Any) -> bool:
    """Whether ``layer`` is channels-redis' ``RedisChannelLayer`` (which keeps group members in Redis)."""
    kind = type(layer)
    return f"{kind.__module__}.{kind.__qualname__}" == "channels_redis.core.RedisChannelLayer"


def shared_redis_url() -> str | None:
    """The Redis every server process shares, if any: ``REDIS_URL``, else the channels-redis layer's first host.

    It holds what must be shared beyond the channel layer: single-use claims of connection
    tokens and the heartbeats of live processes.
    """
    hub_settings = get_hub_settings()
    if hub_settings.redis_url:
        return hub_settings.redis_url
    config = (getattr(settings, "CHANNEL_LAYERS", {}) or {}).get(hub_settings.channel_layer) or {}
    if not str(config.get("BACKEND", "")).startswith("channels_redis."):
        return None
    hosts = (config.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    host = hosts[0]
    address = host.get("address") if isinstance(host, dict) else host
    if isinstance(address, (tuple, list)) and len(address) == 2:  # ("127.0.0.1", 6379), as the docs show
        return f"redis://{address[0]}:{address[1]}"
    if isinstance(host, dict) and "host" in host:
        return f"redis://{host['host']}:{host.get('port', 6379)}/{host.get('db', 0)}"
    return address if isinstance(address, str) else None


def redis_client(url: str) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` in the running event loop (cached per loop)."""
    from redis import asyncio as aioredis

    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        client = clients[url] = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return client


async def redis_now(client: Any) -> float:
    """Redis's own clock (``TIME``): heartbeats compare times written by different hosts."""
    seconds, microseconds = await client.time()
    return float(seconds) + float(microseconds) / 1_000_000


async def mark_alive(channel: str) -> None:
    """Record that the manager owning ``channel`` is alive (its liveness loop calls this)."""
    url = shared_redis_url()
    if url is None:
        return
    client = redis_client(url)
    now = await redis_now(client)
    await client.zadd(ALIVE_KEY, {channel: now})
    await client.zremrangebyscore(ALIVE_KEY, "-inf", now - 24 * 3600)


async def mark_gone(channel: str) -> None:
    """Record that a manager channel stopped cleanly: dead at once (not "unknown", which counts as live)."""
    url = shared_redis_url()
    if url is not None:
        client = redis_client(url)
        await client.zadd(ALIVE_KEY, {channel: await redis_now(client) - DEAD_AFTER - 1})


async def dead_channels() -> set[str]:
    """Manager channels whose process stopped heartbeating more than ``DEAD_AFTER`` seconds ago."""
    url = shared_redis_url()
    if url is None:
        return set()
    client = redis_client(url)
    now = await redis_now(client)
    names = await client.zrangebyscore(ALIVE_KEY, now - 24 * 3600, now - DEAD_AFTER)
    return {name.decode() if isinstance(name, bytes) else str(name) for name in names}


async def _live_channels(layer: Any, group: str, channels: frozenset[str]) -> frozenset[str]:
    """Leave out channels of processes that stopped heartbeating; drop the long-dead ones from the group.

    Runs in whatever event loop asks (a sync view's ``async_to_sync`` makes a new one each
    time), so it borrows the layer's own per-loop connection rather than a client of ours.
    """
    if not channels or shared_redis_url() is None:
        return channels
    ordered = sorted(channels)
    connection = layer.connection(0)  # the first host, which also holds the heartbeats
    scores = await connection.zmscore(ALIVE_KEY, ordered)
    now = await redis_now(connection)
    live: set[str] = set()
    for channel, score in zip(ordered, scores, strict=True):
        if score is None or score >= now - ALIVE_WINDOW:
            live.add(channel)  # unknown (e.g. Redis just restarted): count it, to be safe
        elif score < now - DEAD_AFTER:
            logger.info("signalr_groups: removing channel %s of a dead process from a layer group", channel)
            await layer.group_discard(group, channel)
    return frozenset(live)


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
            members = frozenset(name.decode() if isinstance(name, bytes) else name for name in names)
            return Quorum(channels=await _live_channels(layer, group, members))
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


async def gather_replies(
    layer: Any, group: str, message: dict[str, Any], timeout: float, *, wait_if_unknown: bool = True
) -> tuple[dict[str, dict[str, Any]], bool | None]:
    """Send ``message`` to a layer group and collect one reply per member channel.

    Returns the replies by answering channel, and whether every member answered (its quorum,
    see :func:`layer_group_quorum`) before ``timeout``; ``None`` for a layer that cannot tell
    who listens, for which we either wait out the timeout (``wait_if_unknown``) or just send.
    """
    from signalr_groups.sending import release_channel

    quorum = await layer_group_quorum(layer, group)
    if quorum is not None and quorum.empty:
        return {}, True
    if quorum is None and not wait_if_unknown:
        await layer.group_send(group, message)
        return {}, None
    reply_to = await layer.new_channel()
    replies: dict[str, dict[str, Any]] = {}
    processes: set[str] = set()
    try:
        await layer.group_send(group, {**message, "reply_to": reply_to})
        async with asyncio.timeout(timeout):
            while quorum is None or not quorum.satisfied(set(replies), processes):
                reply = await layer.receive(reply_to)
                replies[str(reply.get("channel"))] = reply
                processes.add(str(reply.get("process")))
    except TimeoutError:
        return replies, None if quorum is None else False
    finally:
        await release_channel(layer, reply_to)
    return replies, True
