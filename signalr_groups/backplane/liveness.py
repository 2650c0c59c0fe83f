"""Which server processes are alive: heartbeats in the shared Redis, on Redis's own clock.

Each process that holds connections records a heartbeat every :data:`ALIVE_INTERVAL` seconds.
A process silent for :data:`ALIVE_WINDOW` seconds is no longer waited for by quorums; after
:data:`DEAD_AFTER` seconds its channel is removed from the layer groups (``RedisChannelLayer``
would keep it, and fill it, until ``group_expiry``). A process that stops cleanly is marked dead
at once. Without a shared Redis every function here does nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from signalr_groups.backplane.layer import is_redis_core, redis_client, redis_now, shared_redis_url
from signalr_groups.backplane.redis_internals import core_first_connection

logger = logging.getLogger(__name__)

#: The sorted set of live manager channels (score: last heartbeat, Unix time on Redis's clock).
ALIVE_KEY: Final = "sgr.alive"
#: How often a manager records that it is alive (seconds).
ALIVE_INTERVAL: Final = 5.0
#: A manager channel silent this long is left out of acknowledgement quorums (seconds).
ALIVE_WINDOW: Final = 15.0
#: A manager channel silent this long is removed from the layer groups it was in (seconds).
DEAD_AFTER: Final = 60.0
#: Heartbeats older than this are deleted (seconds).
_FORGET_AFTER: Final = 24 * 3600


async def mark_alive(channel: str) -> None:
    """Record that the manager owning ``channel`` is alive."""
    url = shared_redis_url()
    if url is None:
        return
    client = redis_client(url)
    now = await redis_now(client)
    await client.zadd(ALIVE_KEY, {channel: now})
    await client.zremrangebyscore(ALIVE_KEY, "-inf", now - _FORGET_AFTER)


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
    names = await client.zrangebyscore(ALIVE_KEY, now - _FORGET_AFTER, now - DEAD_AFTER)
    return {name.decode() if isinstance(name, bytes) else str(name) for name in names}


async def live_channels(layer: Any, group: str, channels: frozenset[str]) -> frozenset[str]:
    """Leave out channels of processes that stopped heartbeating; drop the long-dead ones from the group.

    Runs in whatever event loop asks (a sync view's ``async_to_sync`` makes a new one each
    time), so it borrows the layer's own per-loop connection rather than a client of ours.
    """
    if not channels or shared_redis_url() is None:
        return channels
    ordered = sorted(channels)
    connection = core_first_connection(layer)  # the first host, which also holds the heartbeats
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


class Heartbeat:
    """One process's heartbeat on one layer, and the pruning of dead processes' channels."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        #: Channels of dead processes already removed from this process's layer groups.
        self._pruned: set[str] = set()

    async def beat(self, channel: str, joined: set[str]) -> None:
        """Tell the other processes we are alive; drop newly dead processes' channels from ``joined`` groups."""
        await mark_alive(channel)
        if is_redis_core(self.layer):
            # RedisChannelLayer keeps a dead process's channel in its groups (and fills it) until
            # group_expiry: take newly dead channels out of the groups this process is in.
            dead = await dead_channels() - self._pruned
            for group in list(joined) if dead else ():
                for dead_channel in dead:
                    await self.layer.group_discard(group, dead_channel)
            self._pruned |= dead
