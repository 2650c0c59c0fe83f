"""User-scoped group membership: ``groups.add_user_to_group(user_id, name)``, beyond SignalR.

SignalR's memberships belong to a connection and end with it, so every client must join its
groups again after each reconnect. A user-scoped membership is stored in the database
(:class:`~signalr_groups.models.UserGroupMembership`): every current connection of the user,
on every process, joins the group at once, and every future one (another device, a reconnect,
a restarted server) joins it as it connects, after a fresh grant check if the group is
restricted. Connection-scoped membership keeps SignalR's semantics.

It plugs into the core as :class:`UserGroups`, a lifetime-manager extension.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

from signalr_groups.backplane.messages import USER_GROUP_ACTION
from signalr_groups.backplane.rpc import gather
from signalr_groups.exceptions import GroupAccessDeniedError, HubError, LimitExceededError
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.managers import layer_to_ask
from signalr_groups.lifetime.registry import LocalConnection
from signalr_groups.naming import layer_group_name
from signalr_groups.validation import check_group_name, check_user_id

logger = logging.getLogger(__name__)

#: How long adding or removing a user waits for every process holding the user's connections.
USER_GROUP_ACK_TIMEOUT = 2.0


def _store(hub_key: str, user_id: str, group: str, add: bool) -> None:
    from signalr_groups.models import UserGroupMembership  # app loading: this module loads with the package

    if add:
        UserGroupMembership.objects.get_or_create(hub=hub_key, group=group, user_identifier=user_id)
    else:
        UserGroupMembership.objects.filter(hub=hub_key, group=group, user_identifier=user_id).delete()


def stored_user_groups(hub_key: str, user_id: str) -> list[str]:
    """The groups a user belongs to by user-scoped membership in a hub (reads the database)."""
    from signalr_groups.models import UserGroupMembership  # app loading: this module loads with the package

    return list(
        UserGroupMembership.objects.filter(hub=hub_key, user_identifier=user_id)
        .order_by("group")
        .values_list("group", flat=True)
    )


async def user_group_action(hub_key: str, action: str, user_id: object, group: object) -> bool:
    """Store or delete a user-scoped membership, then apply it to the user's current connections.

    Returns True once every process holding connections of the user has applied it (at once
    when there are none), False if one did not answer within ``USER_GROUP_ACK_TIMEOUT``.
    """
    user = check_user_id(user_id)
    name = check_group_name(group)
    await database_sync_to_async(_store)(hub_key, user, name, action == "add")
    return await apply_user_group_everywhere(hub_key, action, user, name)


async def apply_user_group_everywhere(hub_key: str, action: str, user: str, group: str) -> bool:
    """Add (or remove) every current connection of a user, on every process, to/from a group.

    Does not touch the database (the admin stores first, then calls this after commit).
    """
    layer_group = layer_group_name(hub_key, "user", user)
    manager, layer = layer_to_ask(hub_key, layer_group)
    if layer is None:
        extension = manager.extension(UserGroups) if manager is not None and manager.running else None
        if extension is not None:
            await extension.apply(user, group, action)
        return True
    message = {"type": USER_GROUP_ACTION, "user": user, "group": group, "action": action}
    _replies, complete = await gather(layer, layer_group, message, USER_GROUP_ACK_TIMEOUT)
    if complete is False:
        logger.warning("signalr_groups: not every process applied %s of user %s to group %r", action, user, group)
    return complete is not False


class UserGroups(ManagerExtension):
    """Joins new connections to their user's stored groups, and applies user-scoped changes to local ones."""

    def __init__(self, manager: HubLifetimeManager) -> None:
        super().__init__(manager)
        #: Bumped per user by each user-scoped group change (see on_registered).
        self._revision: dict[str, int] = {}

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Answers :data:`USER_GROUP_ACTION`."""
        return {USER_GROUP_ACTION: self._on_user_group_action}

    async def _on_user_group_action(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.apply(str(message["user"]), str(message["group"]), str(message["action"]))
        return {}

    async def apply(self, user: str, group: str, action: str) -> int:
        """Add (``action="add"``) or remove every local connection of a user to/from a group.

        A connection refused by a restricted group's grant check stays out (logged); returns
        how many connections were handled.
        """
        self._revision[user] = self._revision.get(user, 0) + 1
        manager = self.manager
        handled = 0
        for connection_id in sorted(manager.registry.users.get(user, ())):
            try:
                if action == "add":
                    handled += await manager.add_local(connection_id, group)
                else:
                    handled += await manager.remove_local(connection_id, group)
            except (GroupAccessDeniedError, LimitExceededError) as exc:
                logger.info("signalr_groups: %s not added to %r: %s", connection_id, group, exc)
        return handled

    async def on_registered(self, connection: LocalConnection) -> None:
        """Add a new connection to its user's stored groups (restricted ones after a grant check).

        The connection is already registered, so a user-scoped change made meanwhile reaches it
        directly; but a *removal* handled between our read and our join would be undone by the
        join: if the user's groups changed while we joined, read again and leave what is no
        longer stored.
        """
        user_id = connection.user_identifier
        if user_id is None:
            return
        manager = self.manager
        connection_id = connection.connection_id
        revision = self._revision.get(user_id, 0)
        joined: list[str] = []
        for group in await database_sync_to_async(stored_user_groups)(manager.hub_key, user_id):
            try:
                if await manager.add_local(connection_id, group):
                    joined.append(group)
            except (GroupAccessDeniedError, LimitExceededError) as exc:
                logger.info("signalr_groups: %s not rejoined to %r: %s", connection_id, group, exc)
            except HubError:
                logger.exception("signalr_groups: %s could not rejoin %r", connection_id, group)
        if joined and self._revision.get(user_id, 0) != revision:
            stored = set(await database_sync_to_async(stored_user_groups)(manager.hub_key, user_id))
            for group in [group for group in joined if group not in stored]:
                await manager.remove_local(connection_id, group)

    def on_unregistered(self, connection: LocalConnection) -> None:
        """Forget the user's revision once the user has no local connection."""
        user = connection.user_identifier
        if user is not None and user not in self.manager.registry.users:
            self._revision.pop(user, None)
