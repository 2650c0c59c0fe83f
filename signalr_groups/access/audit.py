"""The audit trail: one :class:`~signalr_groups.models.RevocationRecord` per user who lost a restricted group."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from signalr_groups.models import RevocationRecord


def usernames(accounts: set[str]) -> dict[str, str]:
    """Usernames of these accounts (by pk as a string); deleted users are missing."""
    user_model = get_user_model()
    to_python = user_model._meta.pk.to_python
    rows = user_model._default_manager.filter(pk__in=[to_python(a) for a in accounts]).values_list(
        "pk", user_model.USERNAME_FIELD
    )
    return {str(pk): str(name) for pk, name in rows}


def record_revocations(
    hub: str,
    group: str,
    accounts: set[str],
    cause: str,
    reason: str = "",
    by_pk: Any = None,
    names: dict[str, str] | None = None,
) -> None:
    """Write audit records once the transaction commits (users deleted by then are kept by name only)."""
    if not accounts:
        return
    user_model = get_user_model()
    to_python = user_model._meta.pk.to_python
    names = {**usernames(accounts), **(names or {})}

    def write() -> None:
        existing = {
            str(pk)
            for pk in user_model._default_manager.filter(pk__in=[to_python(a) for a in accounts]).values_list(
                "pk", flat=True
            )
        }
        revoker = by_pk if by_pk is not None and user_model._default_manager.filter(pk=by_pk).exists() else None
        RevocationRecord.objects.bulk_create(
            RevocationRecord(
                hub=hub,
                group=group,
                user_id=to_python(account) if account in existing else None,
                username=names.get(account, ""),
                cause=cause,
                reason=reason,
                revoked_by_id=revoker,
            )
            for account in sorted(accounts)
        )

    transaction.on_commit(write)
