"""Account-level revocation: close every connection of a Django user, in every hub, on every server.

Logout, a password change, deactivation, deletion of the user or of their session all end the
connections they authenticated (see :mod:`signalr_groups.receivers`); the code that changes the
database never touches sockets. It only asks, after the transaction commits, for a message on the
user's account group, which every server process with a connection of that user has joined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction

from signalr_groups.grants import GrantList, active_grants
from signalr_groups.layers import gather_replies, get_layer
from signalr_groups.lifetime import GROUP_ACCESS, REVOKE_ACCOUNT, running_managers
from signalr_groups.naming import layer_group_name

logger = logging.getLogger(__name__)

#: How long a revoking request waits for the server processes to acknowledge (seconds).
ACK_TIMEOUT = 2.0


def account_group(account_id: str) -> str:
    """The channel-layer group of one Django user's connections, shared by all hubs."""
    return layer_group_name("", "account", account_id)


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
    for manager in running_managers():
        manager.revoke_account_local(account, session_key, reason, allow_reconnect)
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


async def publish_group_access(account: str, hub_key: str, grants: GrantList, cause: str) -> None:
    """Tell every process holding connections of ``account`` the user's current grants in a hub.

    Connections in this process are re-checked at once (before this returns); the others when the
    message reaches them. Memberships no longer covered end with ``GroupAccessRevoked(group, cause)``.
    """
    for manager in running_managers():
        if manager.hub_key == hub_key:
            await manager.apply_group_access(account, grants, cause)
    layer = get_layer()
    if layer is None:
        return
    group = account_group(account)
    message = {
        "type": GROUP_ACCESS,
        "hub": hub_key,
        "account": account,
        "grants": [[pattern, until] for pattern, until in grants],
        "cause": cause,
    }
    # Wait until every member that held the user's connections has applied the change, so that
    # when the revoking request returns, no message sent afterwards can reach the user anywhere.
    try:
        _replies, complete = await gather_replies(layer, group, message, ACK_TIMEOUT, wait_if_unknown=False)
    except Exception:  # e.g. a second event loop receiving on a layer the server's loop uses
        logger.warning(
            "signalr_groups: could not wait for acknowledgements of user %s's access change", account, exc_info=True
        )
        return
    if complete is False:
        logger.warning("signalr_groups: not every process acknowledged the access change of user %s", account)


def group_access_changed_on_commit(account_ids: Iterable[Any], hub_key: str, cause: str) -> None:
    """After the transaction commits, re-check these users' memberships in a hub's restricted groups."""
    accounts = sorted({str(account) for account in account_ids})
    if not accounts:
        return

    def run() -> None:
        user_model = get_user_model()
        work: list[tuple[str, GrantList]] = []
        for account in accounts:
            user = user_model._default_manager.filter(pk=account).first()
            work.append((account, active_grants(user, hub_key) if user is not None else []))

        async def publish_all() -> None:
            # Concurrently: the acknowledgement waits of many users overlap instead of adding up.
            results = await asyncio.gather(
                *(publish_group_access(account, hub_key, grants, cause) for account, grants in work),
                return_exceptions=True,
            )
            for (account, _grants), result in zip(work, results, strict=True):
                if isinstance(result, BaseException):
                    logger.error("signalr_groups: could not re-check group access of user %s: %r", account, result)

        try:
            async_to_sync(publish_all)()
        except Exception:
            logger.exception("signalr_groups: could not re-check group access of users %s", ", ".join(accounts))

    transaction.on_commit(run)
