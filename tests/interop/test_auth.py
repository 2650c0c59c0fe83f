"""Authentication for every kind of client (session, bearer header, access_token query) and hub/method permissions."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from signalr_groups.auth.access_tokens import issue_access_token, user_for_access_token
from signalr_groups.logfilters import RedactTokensFilter, redact
from tests.live import InvocationError, NodeDriver

pytestmark = pytest.mark.timeout(60)
RS = "\x1e"
UNAUTHORIZED = "Failed to invoke '{}' because user is unauthorized"


def _user(username="tess", **fields):
    return get_user_model().objects.create_user(username=username, password="secret-pw", **fields)


@pytest.mark.django_db
def test_token_endpoint():
    user = _user()
    client = Client()
    answer = client.post(
        "/signalr/token", {"username": "tess", "password": "secret-pw"}, content_type="application/json"
    )
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert user_for_access_token(body["access_token"]) == user
    assert client.post("/signalr/token", {"username": "tess", "password": "nope"}).status_code == 401
    assert client.post("/signalr/token").status_code == 401
    assert client.get("/signalr/token").status_code == 405
    client.force_login(user)
    assert user_for_access_token(client.post("/signalr/token").json()["access_token"]) == user


@pytest.mark.django_db
def test_tokens_stop_working_when_the_account_changes(monkeypatch):
    user = _user()
    token = issue_access_token(user)
    assert user_for_access_token(token) == user
    assert user_for_access_token(token[:-2] + "xx") is None
    assert user_for_access_token("garbage") is None
    user.set_password("changed")
    user.save()
    assert user_for_access_token(token) is None  # password change
    token = issue_access_token(user)
    user.is_active = False
    user.save()
    assert user_for_access_token(token) is None  # deactivated
    with pytest.raises(ValueError):
        issue_access_token(user)
    user.is_active = True
    user.save()
    token = issue_access_token(user)
    real_time = __import__("time").time
    monkeypatch.setattr("django.core.signing.time.time", lambda: real_time() + 3601)
    assert user_for_access_token(token) is None  # expired
    monkeypatch.undo()
    user.delete()
    assert user_for_access_token(token) is None  # deleted


@pytest.mark.django_db
def test_management_command_issues_a_token():
    user = _user()
    out, err = io.StringIO(), io.StringIO()
    call_command("signalr_access_token", "tess", stdout=out, stderr=err)
    assert user_for_access_token(out.getvalue().strip()) == user
    assert "valid for 3600 seconds" in err.getvalue()


@pytest.mark.django_db(transaction=True)  # the async view reads users in a worker thread
def test_negotiate_on_a_protected_hub():
    user = _user()
    client = Client()
    assert client.post("/protected/negotiate?negotiateVersion=1").status_code == 401
    bearer = {"Authorization": f"Bearer {issue_access_token(user)}"}
    assert client.post("/protected/negotiate?negotiateVersion=1", headers=bearer).status_code == 200
    bad = {"Authorization": "Bearer not-a-token"}
    assert client.post("/protected/negotiate?negotiateVersion=1", headers=bad).status_code == 401
    assert client.post("/interop/negotiate?negotiateVersion=1", headers=bad).status_code == 401  # never downgraded
    client.force_login(user)
    assert client.post("/protected/negotiate?negotiateVersion=1").status_code == 200


def _token(username: str) -> str:
    return issue_access_token(get_user_model().objects.get(username=username))


def test_official_client_with_an_access_token_and_method_permissions(live_server_process, live_users, node: NodeDriver):
    url = live_server_process.http_url + "/protected"
    node.connect("alice", url, accessToken=_token("alice"))
    assert node.invoke("alice", "Whoami") == "alice"
    for method in ("StaffOnly", "ViewUsers"):
        with pytest.raises(InvocationError, match=UNAUTHORIZED.format(method)):
            node.invoke("alice", method)
    assert node.invoke("alice", "NotForStaff") == "not staff"

    # Permissions are read fresh from the database on every call of the long-lived connection.
    alice = get_user_model().objects.get(username="alice")
    alice.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    assert node.invoke("alice", "ViewUsers") == "users"
    alice.user_permissions.clear()
    with pytest.raises(InvocationError, match=UNAUTHORIZED.format("ViewUsers")):
        node.invoke("alice", "ViewUsers")
    alice.is_staff = True
    alice.save()
    assert node.invoke("alice", "StaffOnly") == "staff"
    with pytest.raises(InvocationError, match=UNAUTHORIZED.format("NotForStaff")):
        node.invoke("alice", "NotForStaff")
    alice.is_staff = False
    alice.save()
    with pytest.raises(InvocationError, match=UNAUTHORIZED.format("StaffOnly")):
        node.invoke("alice", "StaffOnly")


def test_anonymous_clients_are_refused_by_a_protected_hub(live_server_process, live_users, node: NodeDriver):
    url = live_server_process.http_url + "/protected"
    with pytest.raises(RuntimeError, match="401"):
        node.connect("anon", url)
    with pytest.raises(RuntimeError):
        node.connect("anon-direct", url, skipNegotiation=True)
    node.connect("session", url, cookie=live_users["bob"])  # a session cookie is enough
    assert node.invoke("session", "Whoami") == "bob"


async def test_browser_style_access_token_query_parameter(live_server_process, live_users):
    token = await sync_to_async(_token)("carol")
    base = live_server_process.ws_url + "/protected"
    async with connect(f"{base}?access_token={token}") as ws:
        await ws.send('{"protocol":"json","version":1}' + RS)
        assert await ws.recv() == "{}" + RS
        await ws.send(json.dumps({"type": 1, "target": "Whoami", "arguments": [], "invocationId": "1"}) + RS)
        assert json.loads(str(await ws.recv()).rstrip(RS))["result"] == "carol"
    for bad in ("?access_token=forged", ""):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base + bad):
                pass
        assert refused.value.response.status_code == 403  # daphne turns every refusal into 403


async def test_pysignalr_with_a_bearer_header(live_server_process, live_users):
    from pysignalr.client import SignalRClient

    token = await sync_to_async(_token)("bob")
    client = SignalRClient(live_server_process.http_url + "/protected", headers={"Authorization": f"Bearer {token}"})
    opened, result = asyncio.Event(), asyncio.get_running_loop().create_future()

    async def on_open() -> None:
        opened.set()

    async def on_result(message) -> None:
        result.set_result(message.result)

    client.on_open(on_open)
    task = asyncio.ensure_future(client.run())
    try:
        await asyncio.wait_for(opened.wait(), 5)
        await client.send("Whoami", [], on_invocation=on_result)
        assert await asyncio.wait_for(result, 5) == "bob"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_tokens_are_redacted_from_log_records():
    assert redact('"WebSocket /hub?id=abc.def&access_token=eyJ.x-y_z" [accepted]') == (
        '"WebSocket /hub?id=[redacted]&access_token=[redacted]" [accepted]'
    )
    assert redact("Authorization: Bearer abc.DEF-123") == "Authorization: Bearer [redacted]"
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s"', ("1.2.3.4", "/h?access_token=s3cret"), None
    )
    assert RedactTokensFilter().filter(record) and "s3cret" not in record.getMessage()
    assert any(isinstance(f, RedactTokensFilter) for f in logging.getLogger("uvicorn.error").filters)
