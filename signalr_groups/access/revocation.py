"""Account-level revocation: close every connection of a Django user, in every hub, on every server.

Logout, a password change, deactivation, deletion of the user or of their session all end the
connections they authenticated (see :mod:`.receivers`); the code that changes the database
never touches sockets. It only asks, after the transaction commits, for a message on the
user's account group, which every server process with a connection of that user has joined.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from signalr_groups import metrics
from signalr_groups.backplane.layer import get_layer
from signalr_groups.backplane.messages import REVOKE_ACCOUNT
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.managers import running_managers
from signalr_groups.naming import layer_group_name

logger = logging.getLogger(__name__)


def account_group(account_id: str) -> str:
    """The channel-layer group of one Django user's connections, shared by all hubs."""
    return layer_group_name("", "account", account_id)


class AccountRevocation(ManagerExtension):
    """Closes this process's connections of an account when a :data:`REVOKE_ACCOUNT` message arrives."""

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Handles :data:`REVOKE_ACCOUNT` (no answer: the sender does not wait)."""
        return {REVOKE_ACCOUNT: self._on_revoke_account}

    async def _on_revoke_account(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self.manager.close_account_local(
            message["account"], message.get("session_key"), message.get("error"), message.get("allow_reconnect")
        )
        return None


async def disconnect_user(
    user_or_pk: Any,
    *,
    reason: str = "Your access was revoked.",
    allow_reconnect: bool = False,
    session_key: str | None = None,
) -> None:
    """Close every connection of a user (only those of ``session_key``, if given), everywhere.

    Each gets a Close message with ``reason`` as its error; ``allow_reconnect=False`` tells the
    official clients not to retry. Connections in this process are closed at once; the others
    through the channel layer (which, for several processes, must be a shared one such as Redis).
    """
    account = str(getattr(user_or_pk, "pk", user_or_pk))
    metrics.revoked("account")
    for manager in running_managers():
        manager.close_account_local(account, session_key, reason, allow_reconnect)
    layer = get_layer()
    if layer is not None:
        await layer.group_send(
            account_group(account),
            {
                "type": REVOKE_ACCOUNT,
                "account": account,
                "session_key": session_key,
                "error": reason,
                "allow_reconnect": allow_reconnect,
            },
        )


def disconnect_user_on_commit(
    user_or_pk: Any, *, reason: str, allow_reconnect: bool = False, session_key: str | None = None
) -> None:
    """Schedule :func:`disconnect_user` for when the current transaction commits (now, outside one)."""

    def run() -> None:
        try:
            async_to_sync(disconnect_user)(
                user_or_pk, reason=reason, allow_reconnect=allow_reconnect, session_key=session_key
            )
        except Exception:
            logger.exception("signalr_groups: could not disconnect user %s", getattr(user_or_pk, "pk", user_or_pk))

    transaction.on_commit(run)
