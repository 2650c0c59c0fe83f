"""Group access grants: restricted groups, live revocation on every device, expiry, the admin action."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from signalr_groups.access.grants import grant_matches
from signalr_groups.auth.access_tokens import issue_access_token
from signalr_groups.models import GroupGrant, RevocationRecord
from tests.live import InvocationError, NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(90)
EVENTS = ("Receive", "GroupAccessRevoked")
DENIED = "An unexpected error occurred invoking 'JoinGroup' on the server. HubException: Access to group '{}' needs a grant, and you have none."


def test_grant_patterns():
    assert grant_matches("vip-room", "vip-room") and not grant_matches("vip-room", "vip-room2")
    assert grant_matches("vip-*", "vip-room") and grant_matches("vip-*", "vip-") and not grant_matches("vip-*", "vi")
    assert grant_matches("*", "anything")


class PySignalRDevice:
    """A pysignalr client (bearer token) running in its own thread and event loop."""

    def __init__(self, url: str, token: str) -> None:
        from pysignalr.client import SignalRClient

        self.events: list[tuple[str, list[Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.client = SignalRClient(url, headers={"Authorization": f"Bearer {token}"})
        opened = threading.Event()

        async def on_open() -> None:
            opened.set()

        def recorder(target: str):
            async def record(args: list[Any]) -> None:
                self.events.append((target, args))

            return record

        self.client.on_open(on_open)
        for target in EVENTS:
            self.client.on(target, recorder(target))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.client.run(), self.loop)
        assert opened.wait(5), "pysignalr did not connect"

    def invoke(self, method: str, *args: Any) -> Any:
        done: asyncio.Future[Any] = self.loop.create_future()

        async def call() -> Any:
            async def on_result(message: Any) -> None:
                done.set_result(message)

            await self.client.send(method, list(args), on_invocation=on_result)
            return await asyncio.wait_for(done, 5)

        message = asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)
        if getattr(message, "error", None):
            raise InvocationError(message.error)
        return message.result

    def close(self) -> None:
        self.task.cancel()
        time.sleep(0.1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _admin_revoke(server: ServerProcess, grant_id: int) -> None:
    """Run the admin's "Revoke now" action on the live server as a staff user (CSRF and all)."""
    staff = get_user_model().objects.create_user(username="staff", password="x", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    changelist = server.http_url + "/admin/signalr_groups/groupgrant/"
    page = urllib.request.urlopen(
        urllib.request.Request(changelist, headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"}), timeout=10
    )
    csrf_cookie = re.search(r"csrftoken=([^;]+)", page.headers.get("Set-Cookie", ""))
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode())
    assert csrf_cookie and form_token
    data = urllib.parse.urlencode(
        {"action": "revoke_now", "_selected_action": str(grant_id), "csrfmiddlewaretoken": form_token.group(1)}
    ).encode()
    cookie = f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={csrf_cookie.group(1)}"
    answer = urllib.request.urlopen(
        urllib.request.Request(changelist, data=data, headers={"Cookie": cookie}), timeout=10
    )
    assert answer.status == 200  # the action redirected back to the changelist
    assert GroupGrant.objects.get(pk=grant_id).revoked_at is not None


def _payloads(events: list[list[Any]]) -> list[dict[str, int]]:
    return [json.loads(args[1]) for args in events if args[0] == "group"]


def _alice_on_three_devices_and_bob(
    server: ServerProcess, live_users: dict[str, str], node: NodeDriver, room: str, expires: Any = None
) -> tuple[GroupGrant, PySignalRDevice]:
    """alice (direct grant to vip-*) on two JS clients and a pysignalr phone, bob (auth-group grant), all in ``room``."""
    user_model = get_user_model()
    alice, bob = user_model.objects.get(username="alice"), user_model.objects.get(username="bob")
    grant = GroupGrant.objects.create(hub="interop", group="vip-*", user=alice, expires_at=expires)
    vips = Group.objects.create(name="vips")
    bob.groups.add(vips)
    GroupGrant.objects.create(hub="interop", group="vip-*", auth_group=vips)
    url = server.http_url + "/interop"
    node.connect("desktop", url, cookie=live_users["alice"], events=EVENTS)
    node.connect("laptop", url, cookie=live_users["alice"], events=EVENTS)
    node.connect("bob", url, cookie=live_users["bob"], events=EVENTS)
    phone = PySignalRDevice(url, issue_access_token(alice))
    try:
        for name in ("desktop", "laptop", "bob"):
            assert node.invoke(name, "JoinGroup", room) is True
        assert phone.invoke("JoinGroup", room) is True
        assert phone.invoke("GetUserIdentifier") == "alice"
    except BaseException:
        phone.close()
        raise
    return grant, phone


def _wait_until_every_device_revoked(
    node: NodeDriver, phone: PySignalRDevice, revoked: list[str], timeout: float
) -> None:
    """Both JS clients and the pysignalr phone got exactly ``GroupAccessRevoked(*revoked)`` within ``timeout``."""
    for name in ("desktop", "laptop"):
        node.wait_for(name, lambda ev: received(ev, "GroupAccessRevoked") == [revoked], timeout)
    deadline = time.monotonic() + timeout
    while ("GroupAccessRevoked", revoked) not in phone.events:
        assert time.monotonic() < deadline, phone.events
        time.sleep(0.02)


def _assert_nothing_sent_after_reached_alice(node: NodeDriver, phone: PySignalRDevice, ended_at_ms: float) -> None:
    """alice's devices got bob's sequence before the revocation and nothing sent after it; bob got both."""
    for name in ("desktop", "laptop"):
        seen = _payloads(received(node.collect(name)))
        assert seen, "the device got group messages before the revocation"
        assert all(p["t"] < ended_at_ms for p in seen), "a message sent after the revocation arrived"
    phone_seen = _payloads([args for target, args in phone.events if target == "Receive"])
    assert phone_seen and all(p["t"] < ended_at_ms for p in phone_seen)
    bob_seen = _payloads(received(node.collect("bob")))
    assert any(p["t"] > ended_at_ms for p in bob_seen), "bob (still granted) kept receiving"
    assert [p["seq"] for p in bob_seen] == sorted(p["seq"] for p in bob_seen)


@pytest.mark.parametrize(("trigger", "cause"), [("admin", "revoked"), ("orm", "revoked"), ("expiry", "expired")])
def test_revocation_reaches_every_device_and_no_later_message(
    live_server_process, live_users, node: NodeDriver, trigger, cause
):
    """Two official JS clients and a pysignalr client (bearer) of one user in a restricted group; bob
    (granted through an auth group) sends sequence-numbered messages throughout. When alice's grant
    ends — by the admin's "Revoke now", by the ORM, or by expiry — all three devices get
    GroupAccessRevoked within 1 s and none of them receives a message sent after that instant."""
    expires = timezone.now() + timedelta(seconds=2) if trigger == "expiry" else None
    grant, phone = _alice_on_three_devices_and_bob(live_server_process, live_users, node, "vip-room", expires)
    try:
        count = 700 if trigger == "expiry" else 300  # keep sending well past the expiry
        node.call("spam", name="bob", method="SendToGroup", group="vip-room", count=count, interval=5)
        if trigger == "expiry":
            assert expires is not None
            ended_at_ms = expires.timestamp() * 1000
        else:
            time.sleep(0.3)
            if trigger == "admin":
                _admin_revoke(live_server_process, grant.pk)
            else:
                assert live_server_process.post_json("/test/grant", {"action": "revoke", "grant": grant.pk}) == {
                    "ok": True
                }
            ended_at_ms = time.time() * 1000  # the commit and the removal happened before the server answered

        _wait_until_every_device_revoked(node, phone, ["vip-room", cause], 3.0)
        assert time.time() * 1000 - ended_at_ms < 1000 + 500  # within 1 s (+ the driver's polling)
        node.wait_for("bob", lambda ev: any(e["target"] == "__spam_done__" for e in ev), 10)

        _assert_nothing_sent_after_reached_alice(node, phone, ended_at_ms)

        with pytest.raises(InvocationError, match=re.escape(DENIED.format("vip-room"))):
            node.invoke("desktop", "JoinGroup", "vip-room")
        if trigger != "expiry":
            record = RevocationRecord.objects.get(group="vip-*")
            assert (record.username, record.cause) == ("alice", "revoked")
            if trigger == "admin":
                assert record.revoked_by is not None and record.revoked_by.username == "staff"
    finally:
        phone.close()


@pytest.mark.parametrize(
    ("action", "cause"),
    [("revoke", "revoked"), ("delete", "deleted"), ("leave_auth_group", "auth-group-left")],
)
def test_orm_changes_in_the_server_end_membership(live_server_process, live_users, node: NodeDriver, action, cause):
    alice = get_user_model().objects.get(username="alice")
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    grant = GroupGrant.objects.create(hub="interop", group="secret", auth_group=team)
    url = live_server_process.http_url + "/interop"
    node.connect("a", url, cookie=live_users["alice"], events=EVENTS)
    assert node.invoke("a", "JoinGroup", "secret") is True
    assert node.invoke("a", "JoinGroup", "open room") is True
    body = {"action": action, "grant": grant.pk, "username": "alice", "group": "team"}
    assert live_server_process.post_json("/test/grant", body) == {"ok": True}
    node.wait_for("a", lambda ev: received(ev, "GroupAccessRevoked") == [["secret", cause]], 1.0)
    node.invoke("a", "SendToGroup", "secret", "after")
    node.invoke("a", "SendToGroup", "open room", "still open")
    node.wait_for("a", lambda ev: ["group", "still open"] in received(ev))
    assert ["group", "after"] not in received(node.events["a"])
    with pytest.raises(InvocationError, match=re.escape(DENIED.format("secret"))):
        node.invoke("a", "JoinGroup", "secret")


def test_grant_expiry_ends_membership(live_server_process, live_users, node: NodeDriver):
    alice = get_user_model().objects.get(username="alice")
    GroupGrant.objects.create(
        hub="interop", group="vip-a", user=alice, expires_at=timezone.now() + timedelta(seconds=1)
    )
    GroupGrant.objects.create(hub="interop", group="vip-b", user=alice)
    node.connect("a", live_server_process.http_url + "/interop", cookie=live_users["alice"], events=EVENTS)
    assert node.invoke("a", "JoinGroup", "vip-a") is True
    assert node.invoke("a", "JoinGroup", "vip-b") is True
    node.wait_for("a", lambda ev: received(ev, "GroupAccessRevoked") == [["vip-a", "expired"]], 3.0)
    node.invoke("a", "SendToGroups", ["vip-a", "vip-b"], "m")
    node.wait_for("a", lambda ev: ["groups", "m"] in received(ev))
    with pytest.raises(InvocationError, match=re.escape(DENIED.format("vip-a"))):
        node.invoke("a", "JoinGroup", "vip-a")


def test_restricted_groups_need_a_grant_and_open_ones_do_not(live_server_process, live_users, node: NodeDriver):
    node.connect("anon", live_server_process.http_url + "/interop", events=EVENTS)
    node.connect("bob", live_server_process.http_url + "/interop", cookie=live_users["bob"], events=EVENTS)
    for name, group in (("anon", "secret"), ("bob", "secret"), ("bob", "vip-x")):
        with pytest.raises(InvocationError, match=re.escape(DENIED.format(group))):
            node.invoke(name, "JoinGroup", group)
    assert node.invoke("bob", "JoinGroup", "secret-but-open") is True  # "secret" is an exact name
    node.invoke("anon", "SendToGroup", "secret", "nobody is there")
    node.invoke("bob", "Echo", "sync")
    assert received(node.collect("bob")) == []


def test_revocation_in_another_process_reaches_the_server_through_redis(
    redis_server_process, live_users, redis_layer_settings, node: NodeDriver
):
    """The admin action posted with Django's test client runs in *this* process; the sockets live in
    the daphne process. The revocation crosses over the shared Redis layer, and the action waits for
    the server process to acknowledge it: no message sent after it returns reaches alice."""
    alice = get_user_model().objects.get(username="alice")
    grant, phone = _alice_on_three_devices_and_bob(redis_server_process, live_users, node, "vip-lounge")
    try:
        staff = get_user_model().objects.create_user(username="staff", password="x", is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(staff)
        node.call("spam", name="bob", method="SendToGroup", group="vip-lounge", count=300, interval=5)
        time.sleep(0.3)
        answer = client.post(
            "/admin/signalr_groups/groupgrant/", {"action": "revoke_now", "_selected_action": [str(grant.pk)]}
        )
        ended_at_ms = time.time() * 1000
        assert answer.status_code == 302
        _wait_until_every_device_revoked(node, phone, ["vip-lounge", "revoked"], 1.0)
        node.wait_for("bob", lambda ev: any(e["target"] == "__spam_done__" for e in ev), 10)
        _assert_nothing_sent_after_reached_alice(node, phone, ended_at_ms)

        # Account-level revocation crosses over too: deactivate alice here, her sockets there close.
        alice.is_active = False
        alice.save()
        for name in ("desktop", "laptop"):
            events = node.wait_for(name, lambda ev: any(e["target"] == "__closed__" for e in ev), 1.0)
            assert ["Server returned an error on close: Your account was deactivated."] in [
                e["args"] for e in events if e["target"] == "__closed__"
            ]
    finally:
        phone.close()
