"""This process's connections of one hub, indexed by group, user and account: synchronous, no I/O.

The registry is the local truth the fan-out reads (:meth:`ConnectionRegistry.deliver`) and the
layer membership follows (:meth:`ConnectionRegistry.interested`). Every method runs to
completion without awaiting, so the indexes are always consistent with each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from signalr_groups.addressing import Address
from signalr_groups.auth.credentials import Credentials
from signalr_groups.backplane.messages import PROCESS
from signalr_groups.protocol.serialized import SerializedInvocation


class LocalConnection(Protocol):
    """What the lifetime manager and its extensions need from a connection of this process."""

    connection_id: str
    user_identifier: str | None
    credentials: Credentials
    #: The Hub class this connection serves.
    hub: type[Any]
    #: The client's network address (from the ASGI scope; None if the server gives none).
    client_address: str | None

    def deliver(self, message: SerializedInvocation) -> None:
        """Queue a shared invocation for this connection (in its hub protocol), without waiting."""

    def tick(self, now: float) -> float | None:
        """Send a keep-alive ping or time the connection out, as due at monotonic time ``now``.

        Returns the monotonic time the connection next needs a look (None: at the next heartbeat).
        """

    def abort(self, error: str | None = None, allow_reconnect: bool | None = None) -> None:
        """Close the connection with a Close message."""

    def notify_hub(self, event: str, *args: Any) -> None:
        """Run the hub's lifecycle method ``event`` (``on_group_access_revoked``, ...) in the background."""

    async def invoke_client(self, target: str, arguments: list[Any], timeout: float) -> Any:
        """Invoke a client method and await the client's result."""


def _anonymous_address(connection: LocalConnection) -> str | None:
    """The client address of an anonymous connection (no user identifier, no account); None otherwise."""
    if connection.user_identifier is not None or connection.credentials.account_id is not None:
        return None
    return connection.client_address


class ConnectionRegistry:
    """Connections by id; connection ids by group, by user identifier and by Django account."""

    def __init__(self) -> None:
        self._connections: dict[str, LocalConnection] = {}
        self._groups: dict[str, set[str]] = {}
        self._users: dict[str, set[str]] = {}
        self._accounts: dict[str, set[str]] = {}
        self._groups_of: dict[str, set[str]] = {}
        self._since: dict[str, float] = {}
        #: Client address -> how many anonymous connections (no user, no account) it holds.
        self._anonymous: dict[str, int] = {}

    # ------------------------------------------------------------------ read-only views

    @property
    def connections(self) -> Mapping[str, LocalConnection]:
        """Connection id -> connection."""
        return self._connections

    @property
    def groups(self) -> Mapping[str, set[str]]:
        """Group name -> ids of its local members (only non-empty groups)."""
        return self._groups

    @property
    def users(self) -> Mapping[str, set[str]]:
        """User identifier -> ids of the user's local connections."""
        return self._users

    @property
    def accounts(self) -> Mapping[str, set[str]]:
        """Django user pk -> ids of the account's local connections (whatever the user identifier)."""
        return self._accounts

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._connections

    def groups_of(self, connection_id: str) -> frozenset[str]:
        """The groups a connection is in (empty if it is not registered)."""
        return frozenset(self._groups_of.get(connection_id, ()))

    def group_count(self, connection_id: str) -> int:
        """How many groups a connection is in."""
        return len(self._groups_of.get(connection_id, ()))

    def anonymous_connection_count(self, address: str) -> int:
        """How many anonymous local connections a client address holds."""
        return self._anonymous.get(address, 0)

    def user_connection_count(self, user: str) -> int:
        """How many local connections a user identifier has."""
        return len(self._users.get(user, ()))

    def is_member(self, connection_id: str, group: str) -> bool:
        """Whether a connection is in a group."""
        return group in self._groups_of.get(connection_id, ())

    def interested(self, kind: str, name: str) -> bool:
        """Whether a group, user or account (``kind``) has a local connection: its layer group is wanted."""
        if kind == "group":
            return name in self._groups
        if kind == "user":
            return name in self._users
        if kind == "account":
            return name in self._accounts
        raise ValueError(f"unknown kind {kind!r}")

    # ------------------------------------------------------------------ changes

    def add(self, connection: LocalConnection) -> None:
        """Register a connection (in its user's and account's index)."""
        connection_id = connection.connection_id
        self._connections[connection_id] = connection
        self._groups_of[connection_id] = set()
        self._since[connection_id] = time.time()
        if connection.user_identifier is not None:
            self._users.setdefault(connection.user_identifier, set()).add(connection_id)
        account = connection.credentials.account_id
        if account is not None:
            self._accounts.setdefault(account, set()).add(connection_id)
        address = _anonymous_address(connection)
        if address is not None:
            self._anonymous[address] = self._anonymous.get(address, 0) + 1

    def remove(self, connection: LocalConnection) -> tuple[list[str], list[tuple[str, str]]] | None:
        """Unregister a connection; None if this very connection is not registered.

        Returns the groups it was in, and the ``(kind, name)`` of every group, user and account
        index that it left empty (their layer groups are no longer wanted).
        """
        connection_id = connection.connection_id
        if self._connections.get(connection_id) is not connection:
            return None
        del self._connections[connection_id]
        self._since.pop(connection_id, None)
        address = _anonymous_address(connection)
        if address is not None:
            left = self._anonymous.get(address, 0) - 1
            if left > 0:
                self._anonymous[address] = left
            else:
                self._anonymous.pop(address, None)
        groups = list(self._groups_of.pop(connection_id, ()))
        emptied: list[tuple[str, str]] = []
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del self._groups[group]
                    emptied.append(("group", group))
        for kind, index, key in (
            ("user", self._users, connection.user_identifier),
            ("account", self._accounts, connection.credentials.account_id),
        ):
            if key is None:
                continue
            members = index.get(key)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del index[key]
                    emptied.append((kind, key))
        return groups, emptied

    def join(self, connection_id: str, group: str) -> bool:
        """Put a registered connection in a group; False if it is not registered or already a member."""
        groups_of = self._groups_of.get(connection_id)
        if groups_of is None or group in groups_of:
            return False
        groups_of.add(group)
        self._groups.setdefault(group, set()).add(connection_id)
        return True

    def leave(self, connection_id: str, group: str) -> bool:
        """Take a connection out of a group; True if that left the group empty."""
        self._groups_of.get(connection_id, set()).discard(group)
        members = self._groups.get(group)
        if members is not None:
            members.discard(connection_id)
            if not members:
                del self._groups[group]
                return True
        return False

    # ------------------------------------------------------------------ delivery

    def recipients(self, address: Address) -> list[LocalConnection]:
        """The local connections ``address`` reaches now, each once."""
        exclude = address.exclude
        connections = self._connections
        ids: Iterable[str]
        if address.kind == "all":
            if not exclude:
                return list(connections.values())
            ids = connections
        elif address.kind == "connections":
            ids = address.names
        else:
            index = self._groups if address.kind == "groups" else self._users
            if len(address.names) == 1:
                ids = index.get(address.names[0], ())
            else:
                ids = set().union(*(index.get(name, ()) for name in address.names))
        found = []
        for connection_id in ids:
            if exclude and connection_id in exclude:
                continue
            connection = connections.get(connection_id)
            if connection is not None:
                found.append(connection)
        return found

    def addressed(self, address: Address, connection: LocalConnection) -> bool:
        """Whether ``connection`` is still registered and still a recipient of ``address`` (exclusions aside)."""
        connection_id = connection.connection_id
        if self._connections.get(connection_id) is not connection:
            return False
        if address.kind == "all" or address.kind == "connections":
            return True
        index = self._groups if address.kind == "groups" else self._users
        for name in address.names:
            members = index.get(name)
            if members is not None and connection_id in members:
                return True
        return False

    def deliver(self, address: Address, record: SerializedInvocation) -> int:
        """Deliver ``record`` to every local recipient of ``address`` at once; return how many got it."""
        recipients = self.recipients(address)
        for connection in recipients:
            connection.deliver(record)
        return len(recipients)

    def account_connections(self, account: str, session_key: str | None = None) -> list[LocalConnection]:
        """The connections of a Django account (only those of ``session_key``, if given)."""
        found = []
        for connection_id in list(self._accounts.get(account, ())):
            connection = self._connections.get(connection_id)
            if connection is None:
                continue
            if session_key is not None and connection.credentials.session_key != session_key:
                continue
            found.append(connection)
        return found

    # ------------------------------------------------------------------ listings

    def listing(self, user: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """Connections (of one user, or in one group) as plain dicts for listings over the layer."""
        ids: Iterable[str] = self._connections
        if user is not None:
            ids = self._users.get(user, set())
        if group is not None:
            in_group = self._groups.get(group, set())
            ids = in_group if user is None else set(ids) & in_group
        rows = []
        for connection_id in sorted(ids):
            connection = self._connections.get(connection_id)
            if connection is None:
                continue
            rows.append(
                {
                    "connection_id": connection_id,
                    "user": connection.user_identifier,
                    "groups": sorted(self._groups_of.get(connection_id, ())),
                    "connected_at": self._since.get(connection_id, 0.0),
                    "process": PROCESS,
                    # A stateful-reconnect connection whose socket dropped, waiting for its client.
                    "reconnecting": bool(getattr(connection, "detached", False)),
                }
            )
        return rows

    def members(self, group: str) -> tuple[int, list[str], int]:
        """The local members of a group: (connections, distinct user identifiers, anonymous connections)."""
        users: set[str] = set()
        anonymous = 0
        ids = self._groups.get(group, ())
        for connection_id in ids:
            connection = self._connections.get(connection_id)
            user = connection.user_identifier if connection is not None else None
            if user is None:
                anonymous += 1
            else:
                users.add(user)
        return len(ids), sorted(users), anonymous
