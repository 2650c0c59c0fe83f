"""A channel layer that counts what crosses it, to prove the fan-out's shape."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from channels.layers import InMemoryChannelLayer


class CountingInMemoryChannelLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """The in-memory layer, counting calls per method (``counts["group_send"]`` ...)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts: Counter[str] = Counter()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.counts["send"] += 1
        await super().send(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.counts["group_send"] += 1
        await super().group_send(group, message)

    async def group_add(self, group: str, channel: str) -> None:
        self.counts["group_add"] += 1
        await super().group_add(group, channel)


class FlakyInMemoryChannelLayer(CountingInMemoryChannelLayer):
    """Fails or slows group operations on demand, like a Redis outage or a slow round trip."""

    fail_add: bool = False
    fail_discard: bool = False
    add_delay: float = 0.0
    discard_delay: float = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.operations: list[str] = []

    async def group_add(self, group: str, channel: str) -> None:
        if self.fail_add and not group.startswith("sgr.all."):
            raise ConnectionError("layer unavailable")
        self.operations.append("add")
        if self.add_delay:
            await asyncio.sleep(self.add_delay)
        await super().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        if self.fail_discard:
            raise ConnectionError("layer unavailable")
        self.operations.append("discard")
        if self.discard_delay:
            await asyncio.sleep(self.discard_delay)
        await super().group_discard(group, channel)
