"""Edge cases of revocation: races with joins and handshakes, bulk updates, deleted users, log formatting."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from signalr_groups.access import grant_store, guard
from signalr_groups.access.guard import GroupAccessGuard
from signalr_groups.auth.access_tokens import issue_access_token
from signalr_groups.auth.credentials import session_state as _session_state
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.logfilters import RedactTokensFilter
from signalr_groups.models import GroupGrant, RevocationRecord
from tests.communicator import HubClient

pytestmark = pytest.mark.django_db(transaction=True)
DENIED = "An unexpected error occurred invoking 'JoinGroup' on the server. HubException: Access to group 'secret' needs a grant, and you have none."


async def _user(name: str = "rita"):
    return await sync_to_async(get_user_model().objects.create_user)(username=name, password="pw")


async def test_a_join_racing_a_revocation_does_not_keep_the_group(monkeypatch):
    user = await _user()
    await sync_to_async(GroupGrant.objects.create)(hub="interop", group="secret", user=user)
    client = HubClient(user=user)
    await client.connect()
    manager = get_manager("interop")
    assert manager is not None
    access_guard = manager.extension(GroupAccessGuard)
    assert access_guard is not None
    loop = asyncio.get_running_loop()
    real = grant_store.fresh_active_grants

    calls = []

    def stale_then_real(user_arg, hub_key):
        calls.append(1)
        grants = real(user_arg, hub_key)
        if len(calls) == 1:  # the revocation commits and is applied while this join reads the grants
            GroupGrant.objects.filter(user=user).update(revoked_at=timezone.now())
            asyncio.run_coroutine_threadsafe(access_guard.apply_group_access(str(user.pk), [], "revoked"), loop).result(
                5
            )
        return grants

    monkeypatch.setattr(guard, "fresh_active_grants", stale_then_real)
    try:
        record = await client.invoke_record("JoinGroup", "secret")
        assert record["error"] == DENIED
        assert len(calls) == 2 and manager.groups.get("secret") is None
    finally:
        await client.disconnect()


async def test_a_password_change_during_the_handshake_is_not_missed():
    user = await _user()
    token = await sync_to_async(issue_access_token)(user)
    client = HubClient()
    client.communicator.scope["query_string"] = f"access_token={token}".encode()
    await client.open()  # authenticated and accepted, not yet registered
    user.set_password("changed")
    await sync_to_async(user.save)()
    await client.send_text('{"protocol":"json","version":1}\x1e')
    assert await client.receive_raw_record() == "{}"
    assert await client.receive_record() == {
        "type": 7,
        "error": "Your credentials are no longer valid.",
        "allowReconnect": False,
    }
    await client.communicator.wait(2)


async def test_bulk_update_of_grants_still_revokes():
    user = await _user()
    await sync_to_async(GroupGrant.objects.create)(hub="interop", group="secret", user=user)
    client = HubClient(user=user)
    await client.connect()
    try:
        assert await client.invoke("JoinGroup", "secret") is True
        await sync_to_async(GroupGrant.objects.filter(user=user).update)(revoked_at=timezone.now())
        assert await client.receive_record() == {
            "type": 1,
            "target": "GroupAccessRevoked",
            "arguments": ["secret", "revoked"],
        }
    finally:
        await client.disconnect()


def _delete_user_with_grant() -> tuple[int, list[tuple[str, int | None, str]]]:
    user = get_user_model().objects.create_user(username="gone", password="pw")
    GroupGrant.objects.create(hub="interop", group="secret", user=user)
    user.delete()
    return GroupGrant.objects.count(), list(RevocationRecord.objects.values_list("username", "user_id", "cause"))


async def test_deleting_a_user_with_a_grant_works_and_is_audited():
    remaining, records = await sync_to_async(_delete_user_with_grant)()
    assert remaining == 0
    assert records == [("gone", None, "deleted")]


def test_session_expiry_comes_from_the_stored_row():
    store = SessionStore()
    store["x"] = 1
    store.create()
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key=store.session_key).update(expire_date=timezone.now() + timedelta(seconds=60))
    key, expires_at = _session_state(SessionStore(store.session_key))
    assert key == store.session_key and expires_at is not None
    assert 50 < expires_at - timezone.now().timestamp() < 70


def test_redaction_keeps_uvicorns_access_log_format_working():
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/page?id=42&access_token=s3cret", "1.1", 200),
        None,
    )
    assert RedactTokensFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert "s3cret" not in line and "id=[redacted]&access_token=[redacted]" in line
