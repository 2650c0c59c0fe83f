"""Account-level revocation: logout, password change, deactivation, deletion, session deletion, token expiry."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from signalr_groups.auth.access_tokens import issue_access_token
from tests.communicator import HubClient
from tests.live import NodeDriver

pytestmark = pytest.mark.timeout(60)


def _closed_error(node: NodeDriver, name: str, timeout: float = 1.0) -> str | None:
    """Wait (at most ``timeout`` s) for the connection to close; return the client's close error text."""
    events = node.wait_for(name, lambda ev: any(e["target"] == "__closed__" for e in ev), timeout=timeout)
    return next(e["args"][0] for e in events if e["target"] == "__closed__")


def _still_open(node: NodeDriver, *names: str) -> None:
    for name in names:
        assert node.invoke(name, "Whoami") is not None


def _new_session_cookie(username: str) -> str:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_logout_closes_that_sessions_connections_only(live_server_process, live_users, node: NodeDriver):
    url = live_server_process.http_url + "/protected"
    other_session = _new_session_cookie("alice")
    token = issue_access_token(get_user_model().objects.get(username="alice"))
    node.connect("tab1", url, cookie=live_users["alice"])
    node.connect("tab2", url, cookie=live_users["alice"])
    node.connect("laptop", url, cookie=other_session)
    node.connect("phone", url, accessToken=token)
    node.connect("bob", url, cookie=live_users["bob"])

    started = time.monotonic()
    assert live_server_process.post_json("/test/logout", {}, cookie=live_users["alice"]) == {"ok": True}
    for name in ("tab1", "tab2"):
        assert _closed_error(node, name) == "Server returned an error on close: You have been logged out."
    assert time.monotonic() - started < 1.5
    _still_open(node, "laptop", "phone", "bob")
    # The logged-out cookie no longer authenticates: the protected hub refuses it.
    with pytest.raises(RuntimeError, match="401"):
        node.connect("tab3", url, cookie=live_users["alice"])


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("password", "Your password was changed."),
        ("deactivate", "Your account was deactivated."),
        ("delete", "Your account was deleted."),
        ("disconnect", "Disconnected by an administrator."),
    ],
)
def test_account_changes_close_every_connection_of_the_user(
    live_server_process, live_users, node: NodeDriver, action, reason
):
    url = live_server_process.http_url + "/protected"
    token = issue_access_token(get_user_model().objects.get(username="alice"))
    node.connect("browser", url, cookie=live_users["alice"])
    node.connect("phone", url, accessToken=token)
    node.connect("open-hub", live_server_process.http_url + "/interop", cookie=live_users["alice"])
    node.connect("bob", url, cookie=live_users["bob"])

    started = time.monotonic()
    assert live_server_process.post_json("/test/account", {"username": "alice", "action": action}) == {"ok": True}
    for name in ("browser", "phone", "open-hub"):
        assert _closed_error(node, name) == f"Server returned an error on close: {reason}"
    assert time.monotonic() - started < 1.5
    _still_open(node, "bob")
    if action != "disconnect":  # the account itself changed: neither credential works any more
        with pytest.raises(RuntimeError, match="401"):
            node.connect("again", url, cookie=live_users["alice"])
        with pytest.raises(RuntimeError, match="401"):
            node.connect("again-token", url, accessToken=token)


def test_deleting_the_session_closes_its_connections(live_server_process, live_users, node: NodeDriver):
    url = live_server_process.http_url + "/protected"
    node.connect("alice", url, cookie=live_users["alice"])
    node.connect("bob", url, cookie=live_users["bob"])
    live_server_process.post_json("/test/account", {"username": "alice", "action": "clear_sessions"})
    assert _closed_error(node, "alice") == "Server returned an error on close: Your session has ended."
    _still_open(node, "bob")


@pytest.mark.django_db(transaction=True)
@override_settings(
    SIGNALR_GROUPS={
        "USER_ID_PROVIDER": "signalr_groups.users.username_user_id",
        "ACCESS_TOKEN_LIFETIME": 1,
        "HEARTBEAT_INTERVAL": 0.05,
    }
)
async def test_an_expired_access_token_closes_the_connection_with_reconnect_allowed():
    from asgiref.sync import sync_to_async

    user = await sync_to_async(get_user_model().objects.create_user)(username="tina", password="x")
    token = await sync_to_async(issue_access_token)(user)
    client = HubClient()
    client.communicator.scope["query_string"] = f"access_token={token}".encode()
    await client.connect()
    assert await client.invoke("GetUserIdentifier") == "tina"
    record = await client.receive_record(timeout=3)
    assert record == {"type": 7, "error": "Your access token expired.", "allowReconnect": True}
    await client.disconnect()


def test_an_expiring_session_closes_its_connection(live_server_process, live_users, node: NodeDriver):
    """Row 19: the session's stored expiry passes while the socket is open."""
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    key = live_users["alice"].split("=", 1)[1]
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() + timedelta(seconds=1.5))
    url = live_server_process.http_url + "/protected"
    node.connect("alice", url, cookie=live_users["alice"])
    node.connect("bob", url, cookie=live_users["bob"])
    assert _closed_error(node, "alice", timeout=4.0) == "Server returned an error on close: Your session expired."
    _still_open(node, "bob")
    with pytest.raises(RuntimeError, match="401"):
        node.connect("again", url, cookie=live_users["alice"])
