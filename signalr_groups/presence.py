"""Who is connected, across every server process: ``groups.get_members(name)`` and connection listings.

SignalR cannot count a group's members once it is scaled out. We ask instead: the caller sends
one query to the group's channel-layer group, and every process holding members answers with
its own count and user identifiers. The answers are summed per answering channel, so nothing is
counted twice, and a process that died without cleaning up simply does not answer: its
connections are never reported. With one process (or the in-memory layer) no message is sent
at all: the local registry is the whole truth.

It plugs into the core as :class:`Presence`, a lifetime-manager extension that answers the queries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from signalr_groups.backplane.messages import GROUP_MEMBERS, LIST_CONNECTIONS
from signalr_groups.backplane.rpc import gather
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.managers import layer_to_ask
from signalr_groups.naming import layer_group_name
from signalr_groups.validation import check_group_name

logger = logging.getLogger(__name__)

#: How long a query waits for processes that hold members but do not answer (seconds).
MEMBERS_QUERY_TIMEOUT = 1.0


@dataclass(frozen=True)
class GroupMembers:
    """The members of a hub group at one instant, summed over every server process.

    ``connection_count`` counts connections (tabs, devices); ``users`` holds the distinct user
    identifiers among them (``len(members.users)`` is the number of people);
    ``anonymous_connection_count`` counts the member connections that have no user identifier.
    ``complete`` is False when a process that holds members did not answer in time, so the
    figures may be low.
    """

    connection_count: int = 0
    users: frozenset[str] = field(default_factory=frozenset)
    anonymous_connection_count: int = 0
    complete: bool = True

    @property
    def user_count(self) -> int:
        """The number of distinct users (people with a user identifier) in the group."""
        return len(self.users)


async def group_members(hub_key: str, group: object) -> GroupMembers:
    """Count the members of a hub group on every server process (see the module docstring)."""
    name = check_group_name(group)
    layer_group = layer_group_name(hub_key, "group", name)
    manager, layer = layer_to_ask(hub_key, layer_group)
    if layer is None:
        count, local_users, anonymous = manager.registry.members(name) if manager is not None else (0, [], 0)
        return GroupMembers(count, frozenset(local_users), anonymous)
    replies, complete = await gather(layer, layer_group, {"type": GROUP_MEMBERS, "group": name}, MEMBERS_QUERY_TIMEOUT)
    if complete is False:
        logger.warning("signalr_groups: not every process answered a member count of group %r", name)
    users: set[str] = set()
    count = anonymous = 0
    for reply in replies.values():
        with contextlib.suppress(TypeError, ValueError):
            count += int(reply.body.get("connections", 0))
            anonymous += int(reply.body.get("anonymous", 0))
            users.update(str(user) for user in reply.body.get("users") or ())
    # complete None: a layer that cannot tell who listens; every answer is in after the wait.
    return GroupMembers(count, frozenset(users), anonymous, complete is not False)


@dataclass(frozen=True)
class ConnectionInfo:
    """One live connection as a listing shows it (``HubContext.get_connections``)."""

    connection_id: str
    user: str | None
    groups: tuple[str, ...]
    connected_at: float
    process: str
    #: Its socket dropped and it waits for its client to reconnect (stateful reconnect).
    reconnecting: bool = False


async def list_connections(hub_key: str, *, user: str | None = None, group: str | None = None) -> list[ConnectionInfo]:
    """Every live connection of a hub (or of one user, or in one group), on every server process."""
    if group is not None:
        group = check_group_name(group)
    if user is not None:
        layer_group = layer_group_name(hub_key, "user", user)
    elif group is not None:
        layer_group = layer_group_name(hub_key, "group", group)
    else:
        layer_group = layer_group_name(hub_key, "all", "")
    manager, layer = layer_to_ask(hub_key, layer_group)
    if layer is None:
        rows = manager.registry.listing(user, group) if manager is not None else []
    else:
        message = {"type": LIST_CONNECTIONS, "user": user, "group": group}
        replies, complete = await gather(layer, layer_group, message, MEMBERS_QUERY_TIMEOUT)
        if complete is False:
            logger.warning("signalr_groups: not every process answered a connection listing of hub %r", hub_key)
        rows = [row for reply in replies.values() for row in reply.body.get("connections") or ()]
    return sorted(
        (
            ConnectionInfo(
                str(row["connection_id"]),
                None if row.get("user") is None else str(row["user"]),
                tuple(str(name) for name in row.get("groups") or ()),
                float(row.get("connected_at") or 0.0),
                str(row.get("process") or ""),
                bool(row.get("reconnecting")),
            )
            for row in rows
        ),
        key=lambda info: (info.user or "", info.connected_at, info.connection_id),
    )


class Presence(ManagerExtension):
    """Answers member counts and connection listings from this process's registry."""

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Answers :data:`GROUP_MEMBERS` and :data:`LIST_CONNECTIONS`."""
        return {GROUP_MEMBERS: self._on_group_members, LIST_CONNECTIONS: self._on_list_connections}

    async def _on_group_members(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if not message.get("reply_to"):
            return None
        count, users, anonymous = self.manager.registry.members(str(message["group"]))
        return {"connections": count, "users": users, "anonymous": anonymous}

    async def _on_list_connections(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if not message.get("reply_to"):
            return None
        return {"connections": self.manager.registry.listing(message.get("user"), message.get("group"))}
