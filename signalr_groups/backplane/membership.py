"""This process's channel on the layer, and the layer groups it is in.

A lifetime manager has one channel. It joins the layer group of the hub as a whole, and the
layer group of each group, user and account that has at least one local connection: joined
with the first local member, left with the last. Joins and leaves of one layer group are
serialized, and each reads what the registry wants *under the lock*, so a join and a leave that
race end in the state the registry has at the end. After a layer outage every membership is
asserted again (a restarted Redis has forgotten them) and failed leaves are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from signalr_groups import metrics
from signalr_groups.backplane.layer import release_channel
from signalr_groups.backplane.liveness import ALIVE_INTERVAL, Heartbeat, mark_alive, mark_gone
from signalr_groups.backplane.redis_internals import pubsub_still_subscribed
from signalr_groups.naming import layer_group_name

logger = logging.getLogger(__name__)

#: ``interested(kind, name)``: whether the registry has a local member of that group, user or account.
Interest = Callable[[str, str], bool]


class _LockEntry:
    """A per-layer-group lock and how many tasks use it (the entry is dropped when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LayerMembership:
    """One channel of one hub in one event loop, and the layer groups it has joined."""

    def __init__(self, layer: Any, hub_key: str, interested: Interest) -> None:
        self.layer = layer
        self.hub_key = hub_key
        self._interested = interested
        self.channel: str | None = None
        self.all_group = layer_group_name(hub_key, "all", "")
        self._joined: set[str] = set()
        #: Layer groups whose leave failed (layer down): left again once the layer is back.
        self._failed_leaves: set[str] = set()
        self._locks: dict[str, _LockEntry] = {}
        self._recovery = asyncio.Lock()
        self._generation = 0
        self._heartbeat = Heartbeat(layer)
        #: False while the layer is unreachable and this channel is recovering its memberships.
        self.healthy = False

    @property
    def joined(self) -> frozenset[str]:
        """The layer groups this channel is in now."""
        return frozenset(self._joined)

    def layer_group(self, kind: str, name: str) -> str:
        """The layer group of a local group, user or account (accounts are shared by every hub)."""
        return layer_group_name("" if kind == "account" else self.hub_key, kind, name)

    async def start(self) -> str:
        """Make a channel and join the hub's layer group; leaves nothing behind if that fails."""
        channel: str = await self.layer.new_channel()
        self.channel = channel
        try:
            await mark_alive(channel)
            await self.layer.group_add(self.all_group, channel)
        except BaseException:
            self.channel = None  # the next connection starts afresh
            with contextlib.suppress(Exception):
                await self.layer.group_discard(self.all_group, channel)
            with contextlib.suppress(Exception):
                await release_channel(self.layer, channel)
            raise
        self._joined.add(self.all_group)
        self.healthy = True
        metrics.layer_up(self.hub_key, True)
        return channel

    async def stop(self) -> None:
        """Leave every layer group and mark this channel dead at once (a clean stop)."""
        channel = self.channel
        if channel is not None:
            for group in [*self._joined, *self._failed_leaves]:
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, channel)
            with contextlib.suppress(Exception):
                await mark_gone(channel)
            # The receive loop unsubscribes its channel when it is cancelled inside layer.receive();
            # cancelled before it ever ran or while handling a message, it did not, and a pub/sub
            # layer would stay subscribed to the channel for good.
            if pubsub_still_subscribed(self.layer, channel):
                with contextlib.suppress(Exception):
                    await release_channel(self.layer, channel)
        self._joined.clear()
        self._failed_leaves.clear()
        self.healthy = False
        metrics.forget_layer(self.hub_key)
        self.channel = None

    @contextlib.asynccontextmanager
    async def _lock(self, layer_group: str) -> AsyncIterator[None]:
        """Serialize this process's joins and leaves of one layer group."""
        entry = self._locks.get(layer_group)
        if entry is None:
            entry = self._locks[layer_group] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(layer_group, None)

    async def sync(self, kind: str, name: str) -> None:
        """Make this channel's membership of a layer group match the registry (serialized per group)."""
        layer_group = self.layer_group(kind, name)
        async with self._lock(layer_group):
            channel = self.channel
            if channel is None:
                return
            # Read the wish under the lock: the registry may have changed while we waited.
            wanted = self._interested(kind, name)
            joined = layer_group in self._joined
            if wanted and not joined:
                await self.layer.group_add(layer_group, channel)
                if self.channel == channel:
                    self._joined.add(layer_group)
                    self._failed_leaves.discard(layer_group)
                else:  # stopped meanwhile: do not leave a dead channel behind
                    await self.layer.group_discard(layer_group, channel)
            elif not wanted and joined:
                self._joined.discard(layer_group)
                try:
                    await self.layer.group_discard(layer_group, channel)
                except BaseException:
                    self._failed_leaves.add(layer_group)  # retried once the layer is back
                    raise

    async def sync_quietly(self, kind: str, name: str) -> None:
        """:meth:`sync`, logging a failure instead of raising it (leaves: the registry is already right)."""
        try:
            await self.sync(kind, name)
        except Exception:
            logger.exception("signalr_groups: leaving the channel-layer group of %s %r failed", kind, name)

    async def refresh(self) -> None:
        """Join every layer group again: channels-redis expires memberships after ``group_expiry``."""
        for group in list(self._joined):
            with contextlib.suppress(Exception):
                await self.layer.group_add(group, self.channel)

    async def reassert(self) -> None:
        """Join again every layer group this channel should be in (a restarted Redis has forgotten them).

        Also retries the leaves that failed during the outage. Each group under its lock, so a
        concurrent leave is never undone.
        """
        channel = self.channel
        if channel is None:
            return
        await mark_alive(channel)  # first: peers must not prune what we are about to re-add
        for group in list(self._joined):
            async with self._lock(group):
                if group in self._joined and self.channel == channel:
                    await self.layer.group_add(group, channel)
        for group in list(self._failed_leaves):
            async with self._lock(group):
                if group not in self._joined:
                    await self.layer.group_discard(group, channel)
                self._failed_leaves.discard(group)

    async def recover(self) -> None:
        """After a layer failure: retry, with backoff, until the layer memberships are back.

        The receive loop and the liveness loop may both notice an outage: one recovers, the
        other waits for it.
        """
        generation = self._generation
        async with self._recovery:
            if self._generation != generation:
                return  # recovered while we waited
            self.healthy = False
            metrics.layer_up(self.hub_key, False)
            delay = 0.1
            for attempt in itertools.count(1):
                await asyncio.sleep(delay)
                try:
                    await self.reassert()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempt == 1 or attempt % 10 == 0:
                        logger.warning("signalr_groups: the channel layer is still unreachable (%s); retrying", exc)
                    delay = min(delay * 2, 5.0)
                    continue
                self._generation += 1
                self.healthy = True
                metrics.layer_up(self.hub_key, True)
                logger.warning("signalr_groups: the channel layer is back; this process rejoined its layer groups")
                return

    async def beat(self) -> None:
        """One liveness heartbeat (and pruning of dead processes' channels from our groups)."""
        if self.channel is not None:
            await self._heartbeat.beat(self.channel, self._joined)

    async def run_liveness(self, interval: float | None = None) -> None:
        """Every ``interval`` seconds (default :data:`ALIVE_INTERVAL`) a heartbeat; on a failure, recover.

        Runs until cancelled.
        """
        while True:
            await asyncio.sleep(ALIVE_INTERVAL if interval is None else interval)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("signalr_groups: the shared Redis is unreachable (%s)", exc)
                await self.recover()
