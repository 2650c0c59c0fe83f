"""Group membership: ``groups.add_to_group(connection_id, name)`` and ``remove_from_group``."""

from __future__ import annotations

from channels.db import database_sync_to_async

from signalr_groups.lifetime.sending import group_action
from signalr_groups.presence import GroupMembers, group_members
from signalr_groups.user_groups import stored_user_groups, user_group_action


class GroupManager:
    """Adds connections to groups and removes them (``IGroupManager``), on any server.

    Both calls are idempotent; a connection can be in any number of groups and leaves them all
    when it disconnects. Group names are scoped to the hub: "lobby" of one hub is not "lobby"
    of another.
    """

    def __init__(self, hub_key: str) -> None:
        self._hub_key = hub_key

    async def add_to_group(self, connection_id: str, group_name: str) -> bool:
        """Add a connection to a group; True once done, False if no server has that connection."""
        return await group_action(self._hub_key, "add", connection_id, group_name)

    async def remove_from_group(self, connection_id: str, group_name: str) -> bool:
        """Remove a connection from a group; True once done, False if no server has that connection."""
        return await group_action(self._hub_key, "remove", connection_id, group_name)

    async def get_members(self, group_name: str) -> GroupMembers:
        """Who is in a group now, on every server: connection count and distinct user identifiers.

        Beyond SignalR (which cannot count a scaled-out group): one query over the channel layer,
        answered by each process that holds members; see :mod:`signalr_groups.presence`.
        """
        return await group_members(self._hub_key, group_name)

    async def add_user_to_group(self, user_id: str, group_name: str) -> bool:
        """Put a user in a group for good: every connection, current and future, on every server.

        Beyond SignalR: stored in the database, so a new device, a reconnect or a restarted
        server joins the group without the client asking (restricted groups: after a fresh
        grant check). True once every process holding the user's connections applied it.
        """
        return await user_group_action(self._hub_key, "add", user_id, group_name)

    async def remove_user_from_group(self, user_id: str, group_name: str) -> bool:
        """End a user-scoped membership; every current connection of the user leaves the group too."""
        return await user_group_action(self._hub_key, "remove", user_id, group_name)

    async def get_user_groups(self, user_id: str) -> list[str]:
        """The groups a user is in by user-scoped membership (from the database)."""
        groups: list[str] = await database_sync_to_async(stored_user_groups)(self._hub_key, user_id)
        return groups
