"""Which lifetime manager serves a hub in the running event loop, and whether to ask other processes."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from signalr_groups.backplane.layer import get_layer, may_have_other_members
from signalr_groups.lifetime.manager import HubLifetimeManager

_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, HubLifetimeManager]] = (
    weakref.WeakKeyDictionary()
)


def loop_managers() -> dict[str, HubLifetimeManager]:
    """The managers of the running event loop, by hub key (a snapshot)."""
    return dict(_managers.get(asyncio.get_running_loop()) or {})


def running_managers() -> list[HubLifetimeManager]:
    """The running managers of every hub in the running event loop."""
    return [manager for manager in loop_managers().values() if manager.running]


def get_manager(hub_key: str, *, create: bool = False) -> HubLifetimeManager | None:
    """Return the manager of ``hub_key`` for the running event loop (creating it if asked)."""
    loop = asyncio.get_running_loop()
    managers = _managers.get(loop)
    if managers is None:
        if not create:
            return None
        managers = _managers[loop] = {}
    manager = managers.get(hub_key)
    if manager is None and create:
        manager = managers[hub_key] = HubLifetimeManager(hub_key, get_layer())
    return manager


def layer_to_ask(hub_key: str, layer_group: str) -> tuple[HubLifetimeManager | None, Any]:
    """This loop's manager of a hub, and the layer to reach ``layer_group``'s other members through.

    The layer is ``None`` when no other process can be in that layer group (no layer, or the
    in-memory layer showing only our own channel): the local registry is then the whole answer,
    and no layer message is needed.
    """
    manager = get_manager(hub_key)
    layer = manager.layer if manager is not None else get_layer()
    own = manager.channel_name if manager is not None else None
    if layer is None or not may_have_other_members(layer, layer_group, own):
        return manager, None
    return manager, layer
