"""When each connection's keep-alive next needs a look: buckets by due time, instead of every connection every second.

A connection's :meth:`~.registry.LocalConnection.tick` pings an idle client, closes a silent one
or one whose credentials expired, and returns the monotonic time it next needs a look: when its
ping falls due, its client timeout could run out, its credentials expire, or (while a hub method
runs, or for stateful reconnect's acknowledgements) the next heartbeat. The schedule files it in
the bucket of that heartbeat; each heartbeat visits only the buckets that are due. Between two
looks a connection is never left longer than :data:`MAX_GAP_HEARTBEATS` heartbeats (settings can
change, a client's first ping can arrive), so a quiet connection costs one call every few seconds
rather than one a second, and 10,000 of them no longer hold the event loop for one sweep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from signalr_groups.lifetime.fanout import SLICE_SECONDS
from signalr_groups.lifetime.registry import ConnectionRegistry, LocalConnection

logger = logging.getLogger(__name__)

#: The longest a connection goes between two looks, in heartbeats.
MAX_GAP_HEARTBEATS: Final = 5


class KeepAliveSchedule:
    """Connections filed by the heartbeat at which they are next due (see the module docstring)."""

    def __init__(self, registry: ConnectionRegistry, heartbeat: Callable[[], float]) -> None:
        self._registry = registry
        self._heartbeat = heartbeat
        self._buckets: dict[int, dict[str, LocalConnection]] = {}
        self._key_of: dict[str, int] = {}

    def __len__(self) -> int:
        """Connections filed."""
        return len(self._key_of)

    def add(self, connection: LocalConnection, due: float) -> None:
        """File ``connection`` to be looked at from monotonic time ``due`` on (a new one: at the next heartbeat)."""
        key = math.floor(due / self._heartbeat())  # (early is harmless: the tick files it again)
        connection_id = connection.connection_id
        old = self._key_of.get(connection_id)
        if old is not None and old != key:
            self._buckets.get(old, {}).pop(connection_id, None)
        self._key_of[connection_id] = key
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = {connection_id: connection}
        else:
            bucket[connection_id] = connection

    def remove(self, connection_id: str) -> None:
        """Forget a connection that left (nothing keeps it alive here)."""
        key = self._key_of.pop(connection_id, None)
        if key is not None:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.pop(connection_id, None)
                if not bucket:
                    del self._buckets[key]

    def clear(self) -> None:
        """Forget every connection (the manager stops)."""
        self._buckets.clear()
        self._key_of.clear()

    async def run_due(self, now: float) -> int:
        """Tick every registered connection that is due at ``now``, yielding between slices; return how many."""
        heartbeat = self._heartbeat()
        current = math.floor(now / heartbeat)
        due_keys = sorted(key for key in self._buckets if key <= current)
        connections = self._registry.connections
        deadline = time.monotonic() + SLICE_SECONDS
        visited = 0
        for key in due_keys:
            for connection in list(self._buckets.pop(key, {}).values()):
                if connections.get(connection.connection_id) is not connection:
                    self._key_of.pop(connection.connection_id, None)
                    continue  # gone
                visited += 1
                try:
                    due = connection.tick(now)
                except Exception:
                    logger.exception("signalr_groups: the keep-alive sweep failed for %s", connection.connection_id)
                    due = None
                soonest, latest = now + heartbeat, now + heartbeat * MAX_GAP_HEARTBEATS
                self.add(connection, soonest if due is None else min(max(due, soonest), latest))
                if visited % 64 == 0 and time.monotonic() >= deadline:
                    await asyncio.sleep(0)  # many due at once: give the event loop back between slices
                    deadline = time.monotonic() + SLICE_SECONDS
        return visited
