"""Reach a hub's clients from outside the hub: views, management commands, tasks, signal receivers.

``get_hub_context(ChatHub)`` is the ``IHubContext<ChatHub>`` analogue. Its ``clients`` and
``groups`` are async; ``.sync`` offers the same calls for synchronous code (built on
``async_to_sync``). In the server process a send is delivered in-process; from another process
(a worker, a command) it travels over the channel layer, so that needs a shared layer such as
channels-redis: the in-memory layer cannot leave its process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from signalr_groups.access.revocation import disconnect_user
from signalr_groups.hubs.clients import ClientProxy, HubClients
from signalr_groups.hubs.groups import GroupManager
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.sending import abort
from signalr_groups.presence import ConnectionInfo, GroupMembers, list_connections


class HubContext:
    """Async access to one hub's clients and groups from anywhere."""

    def __init__(self, hub: type[Hub]) -> None:
        self.hub = hub
        self.clients = HubClients(hub.hub_key())
        self.groups = GroupManager(hub.hub_key())

    async def abort(self, connection_id: str, *, error: str | None = None, allow_reconnect: bool = False) -> bool:
        """Close one connection on whichever server holds it; True if it was found."""
        return await abort(self.hub.hub_key(), connection_id, error, allow_reconnect)

    async def disconnect_user(self, user_or_pk: Any, *, reason: str = "Your access was revoked.") -> None:
        """Close every connection of a Django user, in every hub, on every server ("disconnect everywhere")."""
        await disconnect_user(user_or_pk, reason=reason)

    async def get_connections(self, *, user: str | None = None, group: str | None = None) -> list[ConnectionInfo]:
        """Live connections of this hub on every server (of one user, or in one group, if given)."""
        return await list_connections(self.hub.hub_key(), user=user, group=group)

    @property
    def sync(self) -> SyncHubContext:
        """The same API for synchronous code (views, commands, Celery tasks, signal receivers)."""
        return SyncHubContext(self)


class SyncClientProxy:
    """Synchronous twin of :class:`~signalr_groups.hubs.clients.ClientProxy`."""

    __slots__ = ("_proxy",)

    def __init__(self, proxy: ClientProxy) -> None:
        self._proxy = proxy

    def send(self, target: str, *args: Any) -> None:
        """Invoke client method ``target`` with ``args`` on every recipient."""
        async_to_sync(self._proxy.send)(target, *args)

    def invoke(self, target: str, *args: Any, timeout: float | None = None) -> Any:
        """Invoke client method ``target`` on this one connection and return its result (see ``ClientProxy.invoke``)."""
        return async_to_sync(self._proxy.invoke)(target, *args, timeout=timeout)


class SyncHubClients:
    """Synchronous twin of :class:`~signalr_groups.hubs.clients.HubClients`."""

    def __init__(self, clients: HubClients) -> None:
        self._clients = clients

    @property
    def all(self) -> SyncClientProxy:
        """Every connection of the hub."""
        return SyncClientProxy(self._clients.all)

    def all_except(self, excluded_connection_ids: Iterable[str]) -> SyncClientProxy:
        """Every connection except the given ids."""
        return SyncClientProxy(self._clients.all_except(excluded_connection_ids))

    def client(self, connection_id: str) -> SyncClientProxy:
        """One connection."""
        return SyncClientProxy(self._clients.client(connection_id))

    def clients(self, connection_ids: Iterable[str]) -> SyncClientProxy:
        """Several connections."""
        return SyncClientProxy(self._clients.clients(connection_ids))

    def group(self, group_name: str) -> SyncClientProxy:
        """Every member of a group."""
        return SyncClientProxy(self._clients.group(group_name))

    def groups(self, group_names: Iterable[str]) -> SyncClientProxy:
        """Every member of any of the groups."""
        return SyncClientProxy(self._clients.groups(group_names))

    def group_except(self, group_name: str, excluded_connection_ids: Iterable[str]) -> SyncClientProxy:
        """Every member of a group except the given ids."""
        return SyncClientProxy(self._clients.group_except(group_name, excluded_connection_ids))

    def user(self, user_id: str) -> SyncClientProxy:
        """Every connection of one user."""
        return SyncClientProxy(self._clients.user(user_id))

    def users(self, user_ids: Iterable[str]) -> SyncClientProxy:
        """Every connection of each of the users."""
        return SyncClientProxy(self._clients.users(user_ids))


class SyncGroupManager:
    """Synchronous twin of :class:`~signalr_groups.hubs.groups.GroupManager`."""

    def __init__(self, groups: GroupManager) -> None:
        self._groups = groups

    def add_to_group(self, connection_id: str, group_name: str) -> bool:
        """Add a connection to a group; False if no server has that connection."""
        return async_to_sync(self._groups.add_to_group)(connection_id, group_name)

    def add_user_to_group(self, user_id: str, group_name: str) -> bool:
        """Put a user in a group for good (see :meth:`GroupManager.add_user_to_group`)."""
        return async_to_sync(self._groups.add_user_to_group)(user_id, group_name)

    def remove_user_from_group(self, user_id: str, group_name: str) -> bool:
        """End a user-scoped membership (see :meth:`GroupManager.remove_user_from_group`)."""
        return async_to_sync(self._groups.remove_user_from_group)(user_id, group_name)

    def get_user_groups(self, user_id: str) -> list[str]:
        """The groups a user is in by user-scoped membership."""
        return async_to_sync(self._groups.get_user_groups)(user_id)

    def get_members(self, group_name: str) -> GroupMembers:
        """Who is in a group now, on every server (see :meth:`GroupManager.get_members`)."""
        return async_to_sync(self._groups.get_members)(group_name)

    def remove_from_group(self, connection_id: str, group_name: str) -> bool:
        """Remove a connection from a group; False if no server has that connection."""
        return async_to_sync(self._groups.remove_from_group)(connection_id, group_name)


class SyncHubContext:
    """Synchronous access to one hub's clients and groups (``get_hub_context(Hub).sync``)."""

    def __init__(self, context: HubContext) -> None:
        self._context = context
        self.clients = SyncHubClients(context.clients)
        self.groups = SyncGroupManager(context.groups)

    def abort(self, connection_id: str, *, error: str | None = None, allow_reconnect: bool = False) -> bool:
        """Close one connection on whichever server holds it; True if it was found."""
        return async_to_sync(self._context.abort)(connection_id, error=error, allow_reconnect=allow_reconnect)

    def disconnect_user(self, user_or_pk: Any, *, reason: str = "Your access was revoked.") -> None:
        """Close every connection of a Django user, everywhere."""
        async_to_sync(self._context.disconnect_user)(user_or_pk, reason=reason)

    def get_connections(self, *, user: str | None = None, group: str | None = None) -> list[ConnectionInfo]:
        """Live connections of this hub on every server (see :meth:`HubContext.get_connections`)."""
        return async_to_sync(self._context.get_connections)(user=user, group=group)


def get_hub_context(hub: object) -> HubContext:
    """Return the context of ``hub``: ``await get_hub_context(ChatHub).clients.group("g").send(...)``."""
    if not (isinstance(hub, type) and issubclass(hub, Hub)):
        raise TypeError(f"get_hub_context() needs a Hub subclass, not {hub!r}.")
    return HubContext(hub)
