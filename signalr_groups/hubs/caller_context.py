"""The caller's context inside a hub (``HubCallerContext``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HubCallerContext:
    """Who is calling: the connection id, the Django user, the user identifier, and per-connection items.

    ``items`` is a dict that lives as long as the connection (hub instances do not). ``abort()``
    closes the connection with a Close message that tells the client not to reconnect.
    """

    __slots__ = ("_abort", "_group_names", "connection_id", "items", "scope", "user", "user_identifier")

    def __init__(
        self,
        *,
        connection_id: str,
        user: Any,
        user_identifier: str | None,
        scope: dict[str, Any],
        abort: Callable[[], None],
        group_names: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.user = user
        self.user_identifier = user_identifier
        self.scope = scope
        self.items: dict[Any, Any] = {}
        self._abort = abort
        self._group_names = group_names

    @property
    def group_names(self) -> frozenset[str]:
        """The groups this connection is in right now.

        Live, not remembered: a membership ended by a revocation, a grant's expiry or a
        ``remove_from_group`` from elsewhere is already gone. Use it to check that the caller
        may post to a group.
        """
        return self._group_names() if self._group_names is not None else frozenset()

    def abort(self) -> None:
        """Close this connection for good (Close message without ``allowReconnect``)."""
        self._abort()
