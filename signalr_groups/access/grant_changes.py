"""Publishing a user's grant changes to every process that holds the user's connections.

The revoking request waits until every such process has applied the change (its quorum, see
:func:`signalr_groups.backplane.rpc.gather`), so that when it returns, no message sent
afterwards can reach the user in a group they lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction

from signalr_groups import metrics
from signalr_groups.access.grant_store import active_grants
from signalr_groups.access.grants import GrantList
from signalr_groups.access.guard import GroupAccessGuard
from signalr_groups.access.revocation import account_group
from signalr_groups.backplane.layer import get_layer
from signalr_groups.backplane.messages import GROUP_ACCESS
from signalr_groups.backplane.rpc import gather
from signalr_groups.lifetime.managers import running_managers

logger = logging.getLogger(__name__)

#: How long a revoking request waits for the server processes to acknowledge (seconds).
ACK_TIMEOUT = 2.0


async def publish_group_access(account: str, hub_key: str, grants: GrantList, cause: str) -> None:
    """Tell every process holding connections of ``account`` the user's current grants in a hub.

    Connections in this process are re-checked at once (before this returns); the others when the
    message reaches them. Memberships no longer covered end with ``GroupAccessRevoked(group, cause)``.
    """
    started = time.perf_counter()
    for manager in running_managers():
        guard = manager.extension(GroupAccessGuard) if manager.hub_key == hub_key else None
        if guard is not None:
            await guard.apply_group_access(account, grants, cause)
    layer = get_layer()
    if layer is None:
        metrics.revoked(cause, time.perf_counter() - started)
        return
    message = {
        "type": GROUP_ACCESS,
        "hub": hub_key,
        "account": account,
        "grants": [[pattern, until] for pattern, until in grants],
        "cause": cause,
    }
    try:
        _replies, complete = await gather(layer, account_group(account), message, ACK_TIMEOUT, wait_if_unknown=False)
    except Exception:  # e.g. a second event loop receiving on a layer the server's loop uses
        logger.warning(
            "signalr_groups: could not wait for acknowledgements of user %s's access change", account, exc_info=True
        )
        return
    if complete is False:
        logger.warning("signalr_groups: not every process acknowledged the access change of user %s", account)
        metrics.revoked(cause)  # (no time: not every process answered)
    else:
        metrics.revoked(cause, time.perf_counter() - started)


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
