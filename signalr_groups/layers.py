"""Access to the configured channel layer, and what we may know about who listens on it."""

from __future__ import annotations

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
