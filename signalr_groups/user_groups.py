"""User-scoped group membership: ``groups.add_user_to_group(user_id, name)``, beyond SignalR.

SignalR's memberships belong to a connection and end with it, so every client must join its
groups again after each reconnect. A user-scoped membership is stored in the database
(:class:`~signalr_groups.models.UserGroupMembership`): every current connection of the user,
on every process, joins the group at once, and every future one (another device, a reconnect,
a restarted server) joins it as it connects, after a fresh grant check if the group is
restricted. Connection-scoped membership keeps SignalR's semantics.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async

from signalr_groups.exceptions import HubError
from signalr_groups.grants import GroupAccessDeniedError
from signalr_groups.layers import gather_replies
from signalr_groups.lifetime import USER_GROUP_ACTION, HubLifetimeManager, layer_to_ask
from signalr_groups.naming import layer_group_name
from signalr_groups.sending import check_group_name

logger = logging.getLogger(__name__)

#: How long adding or removing a user waits for every process holding the user's connections.
USER_GROUP_ACK_TIMEOUT = 2.0


def _check_user(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise TypeError(f"A user identifier must be a non-empty string, not {user_id!r}.")
    return user_id


def _store(hub_key: str, user_id: str, group: str, add: bool) -> None:
    from signalr_groups.models import UserGroupMembership

    if add:
        UserGroupMembership.objects.get_or_create(hub=hub_key, group=group, user_identifier=user_id)
    else:
        UserGroupMembership.objects.filter(hub=hub_key, group=group, user_identifier=user_id).delete()


def stored_user_groups(hub_key: str, user_id: str) -> list[str]:
    """The groups a user belongs to by user-scoped membership in a hub (reads the database)."""
    from signalr_groups.models import UserGroupMembership

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
    user = _check_user(user_id)
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
        if manager is not None and manager.running:
            await manager.apply_user_group(user, group, action)
        return True
    message = {"type": USER_GROUP_ACTION, "user": user, "group": group, "action": action}
    _replies, complete = await gather_replies(layer, layer_group, message, USER_GROUP_ACK_TIMEOUT)
    if complete is False:
        logger.warning("signalr_groups: not every process applied %s of user %s to group %r", action, user, group)
    return complete is not False


async def join_stored_groups(manager: HubLifetimeManager, connection_id: str, user_id: str) -> list[str]:
    """Add a new connection to its user's stored groups (restricted ones after a grant check); return them.

    The connection is already registered, so a user-scoped change made meanwhile reaches it
    directly; but a *removal* handled between our read and our join would be undone by the join:
    if the user's groups changed while we joined, read again and leave what is no longer stored.
    """
    revision = manager.user_group_revision.get(user_id, 0)
    joined: list[str] = []
    for group in await database_sync_to_async(stored_user_groups)(manager.hub_key, user_id):
        try:
            if await manager.add_local(connection_id, group):
                joined.append(group)
        except GroupAccessDeniedError as exc:
            logger.info("signalr_groups: %s not rejoined to %r: %s", connection_id, group, exc)
        except HubError:
            logger.exception("signalr_groups: %s could not rejoin %r", connection_id, group)
    if joined and manager.user_group_revision.get(user_id, 0) != revision:
        stored = set(await database_sync_to_async(stored_user_groups)(manager.hub_key, user_id))
        for group in [group for group in joined if group not in stored]:
            await manager.remove_local(connection_id, group)
            joined.remove(group)
    return joined
