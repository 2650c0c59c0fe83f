"""How features plug into the lifetime manager: :class:`ManagerExtension`, registered in ``AppConfig.ready()``.

The core (protocol, server, lifetime, backplane) imports no feature. Access control, user-scoped
groups and presence each subclass :class:`ManagerExtension` and call
:func:`register_extension` from the app's ``ready()``; every lifetime manager then makes one
instance of each, in registration order, and calls it at these points:

=========================  ==============================================================
``before_join``            a connection is about to join a group: refuse (raise a
                           :class:`~signalr_groups.exceptions.HubError`) or prepare
``on_joined``/``on_left``  a connection joined or left a group (also on disconnect)
``on_registered``          a new connection is registered, before its handshake is answered
``on_unregistered``        a connection left the registry
``on_sweep``               once a second, with the keep-alive sweep
``layer_handlers``         handlers for channel-layer message types; what a handler returns
                           is the answer sent back (None: no answer)
=========================  ==============================================================

It is the idea of ASP.NET Core's ``IHubFilter`` one level down: code around the manager's
steps, not around hub methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalr_groups.lifetime.manager import HubLifetimeManager
    from signalr_groups.lifetime.registry import LocalConnection

#: Handles one channel-layer message; returns the answer's body, or None for no answer.
LayerHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class ManagerExtension:
    """A feature attached to every lifetime manager; override the hooks it needs (all default to no-ops)."""

    def __init__(self, manager: HubLifetimeManager) -> None:
        self.manager = manager

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Channel-layer message types this extension handles, with their handlers."""
        return {}

    async def before_join(self, connection: LocalConnection, group: str) -> None:
        """Called before a connection joins a group; raise a ``HubError`` to refuse the join."""

    def on_joined(self, connection_id: str, group: str) -> None:
        """Called once a connection is in a group (synchronously, right after the registry changed)."""

    def on_left(self, connection_id: str, group: str) -> None:
        """Called once a connection left a group, by a removal or by disconnecting."""

    async def on_registered(self, connection: LocalConnection) -> None:
        """Called for a new connection after registration, before its handshake is answered."""

    def on_unregistered(self, connection: LocalConnection) -> None:
        """Called after a connection left the registry."""

    def on_sweep(self) -> None:
        """Called by the manager's once-a-second sweep (keep it cheap)."""


_extensions: list[type[ManagerExtension]] = []


def register_extension(extension: type[ManagerExtension]) -> None:
    """Attach ``extension`` to every lifetime manager created from now on (idempotent)."""
    if not issubclass(extension, ManagerExtension):
        raise TypeError(f"register_extension() needs a ManagerExtension subclass, not {extension!r}.")
    if extension not in _extensions:
        _extensions.append(extension)


def registered_extensions() -> tuple[type[ManagerExtension], ...]:
    """The registered extensions, in registration order."""
    return tuple(_extensions)
