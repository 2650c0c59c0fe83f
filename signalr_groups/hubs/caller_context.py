"""The caller's context inside a hub (``HubCallerContext``)."""

from __future__ import annotations

from typing import Any, Protocol


class CallerConnection(Protocol):
    """What a :class:`HubCallerContext` asks of its connection."""

    def abort_by_hub(self) -> None:
        """Close the connection for good (Close message without ``allowReconnect``)."""

    def group_names(self) -> frozenset[str]:
        """The groups the connection is in right now."""


class HubCallerContext:
    """Who is calling: the connection id, the Django user, the user identifier, and per-connection items.

    ``items`` is a dict that lives as long as the connection (hub instances do not). ``abort()``
    closes the connection with a Close message that tells the client not to reconnect.
    """

    __slots__ = ("_connection", "_items", "connection_id", "scope", "user", "user_identifier")

    def __init__(
        self,
        *,
        connection_id: str,
        user: Any,
        user_identifier: str | None,
        scope: dict[str, Any],
        connection: CallerConnection | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.user = user
        self.user_identifier = user_identifier
        self.scope = scope
        self._items: dict[Any, Any] | None = None
        self._connection = connection

    @property
    def items(self) -> dict[Any, Any]:
        """Per-connection storage: lives as long as the connection (made on first use)."""
        items = self._items
        if items is None:
            items = self._items = {}
        return items

    @property
    def group_names(self) -> frozenset[str]:
        """The groups this connection is in right now.

        Live, not remembered: a membership ended by a revocation, a grant's expiry or a
        ``remove_from_group`` from elsewhere is already gone. Use it to check that the caller
        may post to a group.
        """
        return self._connection.group_names() if self._connection is not None else frozenset()

    def _unlink(self) -> None:
        """The connection is over (called by the server): ``group_names`` is empty, ``abort()`` does nothing."""
        self._connection = None

    def abort(self) -> None:
        """Close this connection for good (Close message without ``allowReconnect``)."""
        if self._connection is not None:
            self._connection.abort_by_hub()
