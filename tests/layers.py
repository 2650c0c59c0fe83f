"""A channel layer that counts what crosses it, to prove the fan-out's shape."""

from __future__ import annotations

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
