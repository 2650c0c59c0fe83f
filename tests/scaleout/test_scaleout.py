"""Issue 5 acceptance: two daphne processes scaled out on one real redis-server, with both channels-redis layers.

Each layer ("pubsub", "core") gets its own pair of server processes A and B, started with the app's one
switch (``SIGNALR_GROUPS["REDIS_URL"]``, here through ``SIGNALR_TEST_REDIS_URL``). This test process points
at the same Redis too, so its hub context and admin are a third process of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from signalr_groups import get_hub_context
from signalr_groups.models import GroupGrant
from signalr_groups.presence import GroupMembers
from tests.hubs import InteropHub
from tests.live import NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(180)

LAYERS = ["pubsub", "core"]
EVENTS = ("Receive", "GroupAccessRevoked")
#: How late the node driver may notice an event it already has (it is polled every 50 ms).
POLL_SLACK = 0.2
HANDSHAKE = '{"protocol":"json","version":1}\x1e'
RS = "\x1e"
ADMIN_PAGE = "/admin/signalr_groups/liveconnection/"


class Cluster:
    """Server processes A and B of one layer on one Redis; a killed one restarts on its old port."""

    def __init__(self, layer: str, redis_url: str, db_path: str, logdir: Path) -> None:
        self.layer = layer
        self.redis_url = redis_url
        self.db_path = db_path
        self.logdir = logdir
        self._starts = 0
        self.servers: list[ServerProcess] = []
        try:
            for index in range(2):
                self.servers.append(self._start(index, 0))
        except BaseException:
            self.stop()
            raise

    def _start(self, index: int, port: int) -> ServerProcess:
        self._starts += 1
        env = {"SIGNALR_TEST_REDIS_URL": self.redis_url, "SIGNALR_TEST_REDIS_LAYER": self.layer}
        log = self.logdir / f"{self.layer}-{'AB'[index]}-{self._starts}.log"
        return ServerProcess(log, self.db_path, extra_env=env, port=port)

    @property
    def a(self) -> ServerProcess:
        return self.servers[0]

    @property
    def b(self) -> ServerProcess:
        return self.servers[1]

    def kill(self, index: int) -> None:
        self.servers[index].kill()

    def restart(self, index: int) -> ServerProcess:
        old = self.servers[index]
        if old.process.poll() is None:
            old.kill()
        self.servers[index] = self._start(index, old.port)
        return self.servers[index]

    def ensure_running(self) -> None:
        for index, server in enumerate(self.servers):
            if server.process.poll() is not None:
                self.restart(index)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module", params=LAYERS)
def cluster(request, django_db_setup, redis_url, tmp_path_factory) -> Iterator[Cluster]:
    logdir: Path = tmp_path_factory.mktemp(f"scaleout-{request.param}")
    servers = Cluster(request.param, redis_url, str(settings.DATABASES["default"]["NAME"]), logdir)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def cluster_settings(cluster: Cluster, redis_url) -> Iterator[Cluster]:
    """This process joins the cluster (same Redis, same layer); a server killed by an earlier test is back."""
    cluster.ensure_running()
    hub_settings = {**settings.SIGNALR_GROUPS, "REDIS_URL": redis_url, "REDIS_LAYER": cluster.layer}
    with override_settings(SIGNALR_GROUPS=hub_settings):
        yield cluster


# ---------------------------------------------------------------- helpers


def _connect(node: NodeDriver, name: str, server: ServerProcess, cookie: str | None, **options: Any) -> str:
    """Connect the official client; return once the server registered it (and joined its stored groups).

    The handshake answer comes before registration (as in ASP.NET Core), so a send addressed to the
    user right after ``start()`` could miss the new connection; an invocation is only handled after it.
    """
    connection_id = node.connect(name, server.http_url + "/interop", cookie=cookie, events=EVENTS, **options)
    assert connection_id
    assert node.invoke(name, "Echo", "registered") == "registered"
    return connection_id


def _messages(node: NodeDriver, name: str) -> Counter[tuple[str, str]]:
    """Every ``Receive(kind, message)`` the connection got so far, counted."""
    return Counter((str(args[0]), str(args[1])) for args in received(node.collect(name)))


def _wait_for_messages(node: NodeDriver, name: str, wanted: set[tuple[str, str]], timeout: float = 10) -> None:
    node.wait_for(name, lambda ev: wanted <= {(str(a[0]), str(a[1])) for a in received(ev)}, timeout)


def _closed_error(node: NodeDriver, name: str, timeout: float) -> str | None:
    events = node.wait_for(name, lambda ev: any(e["target"] == "__closed__" for e in ev), timeout=timeout)
    return next(e["args"][0] for e in events if e["target"] == "__closed__")


def _superuser_cookie() -> str:
    admin = get_user_model().objects.create_user(username="admin", password="x", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _admin_page(server: ServerProcess, cookie: str, query: str) -> str:
    """The live-connections admin page as rendered by a server process (its own cluster-wide query)."""
    request = urllib.request.Request(f"{server.http_url}{ADMIN_PAGE}?{query}", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def _group_row(page: str, group: str) -> tuple[int, int] | None:
    """(connections, users) of a group in the page's "Per group" table."""
    match = re.search(rf'group={re.escape(group)}">{re.escape(group)}</a></td><td>(\d+)</td><td>(\d+)</td>', page)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def _user_rows(page: str) -> dict[str, int]:
    """user -> connections in the page's "Per user" table."""
    table = page.split('id="live-users"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>\s*<td>(?:<a [^>]*>)?([^<]+)(?:</a>)?</td>\s*<td>(\d+)</td>", table)
    return {user.strip(): int(count) for user, count in rows}


def _listed(page: str) -> str:
    """The "Connections" table of the page (messages above it may name connections too)."""
    return page.split('id="live-connections"', 1)[1].split("</table>", 1)[0]


def _summary(page: str) -> str:
    match = re.search(r'<p id="live-summary">(.*?)</p>', page, re.S)
    assert match, page
    return " ".join(match.group(1).split())


# ---------------------------------------------------------------- 1. every clients.* target across processes


def test_user_group_client_and_exclusion_sends_cross_processes(cluster_settings, live_users, node: NodeDriver):
    cluster = cluster_settings
    ids = {
        "alice-a": _connect(node, "alice-a", cluster.a, live_users["alice"]),
        "alice-b": _connect(node, "alice-b", cluster.b, live_users["alice"]),
        "bob-a": _connect(node, "bob-a", cluster.a, live_users["bob"]),
        "carol-b": _connect(node, "carol-b", cluster.b, live_users["carol"]),
    }
    here = get_hub_context(InteropHub).sync.clients

    # clients.user: from a hub method on A, and from the hub context of this (connection-less) process.
    node.invoke("bob-a", "SendToUser", "alice", "from-a")
    here.user("alice").send("Receive", "ctx-user", "from-here")
    node.invoke("carol-b", "SendToUsers", ["alice", "bob"], "from-b")

    # A group split over both processes; numbered sends from B and from here, each must arrive exactly once.
    for name in ids:
        assert node.invoke(name, "JoinGroup", "room") is True
    for seq in range(5):
        node.invoke("carol-b", "SendToGroup", "room", f"b{seq}")
        here.group("room").send("Receive", "group", f"t{seq}")
    node.invoke("alice-a", "SendToGroups", ["room", "other room"], "groups-a")

    # Exclusions and single connections, each time naming a connection on the other process.
    node.invoke("bob-a", "SendToGroupExcept", "room", [ids["alice-b"]], "gx-a")
    here.group_except("room", [ids["bob-a"]]).send("Receive", "group_except", "gx-here")
    node.invoke("alice-b", "SendToAllExcept", [ids["alice-a"], ids["carol-b"]], "ax-b")
    here.all_except([ids["alice-b"]]).send("Receive", "all_except", "ax-here")
    node.invoke("carol-b", "SendToOthersInGroup", "room", "oig-b")
    node.invoke("bob-a", "SendToClient", ids["carol-b"], "direct-a")
    node.invoke("carol-b", "SendToClients", [ids["alice-a"], ids["bob-a"]], "several-b")
    here.client(ids["alice-b"]).send("Receive", "client", "direct-here")

    # Fences: each sender's last message; sends from one sender arrive in order, so after the
    # fences nothing sent before them can still be on its way.
    node.invoke("bob-a", "SendToAll", "fence-a")
    node.invoke("carol-b", "SendToAll", "fence-b")
    here.all.send("Receive", "all", "fence-here")
    fences = {("all", "fence-a"), ("all", "fence-b"), ("all", "fence-here")}
    for name in ids:
        _wait_for_messages(node, name, fences)

    group = Counter({("group", f"{p}{s}"): 1 for p in "bt" for s in range(5)})
    common = Counter({("groups", "groups-a"): 1, **dict.fromkeys(fences, 1)}) + group
    expected = {
        "alice-a": {
            ("user", "from-a"), ("ctx-user", "from-here"), ("users", "from-b"), ("group_except", "gx-a"),
            ("group_except", "gx-here"), ("all_except", "ax-here"), ("others_in_group", "oig-b"),
            ("clients", "several-b"),
        },
        "alice-b": {
            ("user", "from-a"), ("ctx-user", "from-here"), ("users", "from-b"), ("group_except", "gx-here"),
            ("all_except", "ax-b"), ("others_in_group", "oig-b"), ("client", "direct-here"),
        },
        "bob-a": {
            ("users", "from-b"), ("group_except", "gx-a"), ("all_except", "ax-b"), ("all_except", "ax-here"),
            ("others_in_group", "oig-b"), ("clients", "several-b"),
        },
        "carol-b": {
            ("group_except", "gx-a"), ("group_except", "gx-here"), ("all_except", "ax-here"), ("client", "direct-a"),
        },
    }  # fmt: skip
    for name, own in expected.items():
        got = _messages(node, name)
        assert got == common + Counter(dict.fromkeys(own, 1)), f"{name} ({cluster.layer}): {sorted(got.items())}"


# ---------------------------------------------------------------- 2. negotiate on A, WebSocket on B


def _negotiate(server: ServerProcess, cookie: str) -> dict[str, Any]:
    request = urllib.request.Request(
        server.http_url + "/interop/negotiate?negotiateVersion=1", data=b"", headers={"Cookie": cookie}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _open(server: ServerProcess, token: str, cookie: str) -> Any:
    return connect(
        f"{server.ws_url}/interop?id={token}",
        additional_headers={"Cookie": cookie},
        proxy=None,
        open_timeout=10,
        close_timeout=1,
    )


async def _handshake(ws: ClientConnection) -> None:
    await ws.send(HANDSHAKE)
    assert await asyncio.wait_for(ws.recv(), 10) == "{}\x1e"


async def _invoke(ws: ClientConnection, method: str, *args: Any) -> Any:
    await ws.send(json.dumps({"type": 1, "invocationId": "1", "target": method, "arguments": list(args)}) + "\x1e")
    deadline = time.monotonic() + 10
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        for record in str(raw).split("\x1e"):
            if record:
                message = json.loads(record)
                if message["type"] == 3 and message.get("invocationId") == "1":
                    assert "error" not in message, message["error"]
                    return message.get("result")


async def _refused(server: ServerProcess, token: str, cookie: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with _open(server, token, cookie):
            pass
    return int(info.value.response.status_code)


async def test_negotiate_on_one_process_connect_on_the_other_and_no_replay(cluster_settings, live_users):
    cluster, cookie = cluster_settings, live_users["alice"]
    body = await asyncio.to_thread(_negotiate, cluster.a, cookie)
    token = body["connectionToken"]
    async with _open(cluster.b, token, cookie) as ws:  # no sticky session: B accepts A's token
        await _handshake(ws)
        assert await _invoke(ws, "GetConnectionId") == body["connectionId"]
        assert await _invoke(ws, "GetUserIdentifier") == "alice"
        # While it is open, the token cannot open a second socket on either process.
        assert await _refused(cluster.a, token, cookie) in (403, 404)
        assert await _refused(cluster.b, token, cookie) in (403, 404)
        assert await _invoke(ws, "Echo", "still open") == "still open"
    # Used up everywhere: A never saw it used, only the cluster-wide claim in Redis knows.
    assert await _refused(cluster.a, token, cookie) in (403, 404)
    assert await _refused(cluster.b, token, cookie) in (403, 404)
    # The other way round, with a fresh token: negotiate on B, connect on A; replay on B is refused.
    body = await asyncio.to_thread(_negotiate, cluster.b, cookie)
    async with _open(cluster.a, body["connectionToken"], cookie) as ws:
        await _handshake(ws)
        assert await _invoke(ws, "GetConnectionId") == body["connectionId"]
    assert await _refused(cluster.b, body["connectionToken"], cookie) in (403, 404)


# ---------------------------------------------------------------- 3. revocation and disconnect-everywhere


def test_revocation_and_disconnect_everywhere_reach_the_other_process_within_1s(
    cluster_settings, live_users, node: NodeDriver
):
    cluster = cluster_settings
    alice = get_user_model().objects.get(username="alice")
    grant = GroupGrant.objects.create(hub="interop", group="vip-*", user=alice)
    _connect(node, "alice-a", cluster.a, live_users["alice"])
    _connect(node, "alice-b", cluster.b, live_users["alice"])
    _connect(node, "bob-b", cluster.b, live_users["bob"])
    for name in ("alice-a", "alice-b"):
        assert node.invoke(name, "JoinGroup", "vip-lounge") is True
    assert node.invoke("bob-b", "JoinGroup", "lobby") is True

    # Revoked on A (the ORM in a view of process A): alice's connection on B leaves the group within 1 s.
    started = time.monotonic()
    assert cluster.a.post_json("/test/grant", {"action": "revoke", "grant": grant.pk}) == {"ok": True}
    node.wait_for("alice-b", lambda ev: received(ev, "GroupAccessRevoked") == [["vip-lounge", "revoked"]], 1.0)
    revoked_after = time.monotonic() - started
    node.wait_for("alice-a", lambda ev: received(ev, "GroupAccessRevoked") == [["vip-lounge", "revoked"]], 1.0)
    assert revoked_after < 1.0 + POLL_SLACK, f"revocation took {revoked_after:.3f} s"
    node.invoke("alice-a", "SendToGroup", "vip-lounge", "after revocation")
    node.invoke("alice-b", "SendToAll", "fence")
    _wait_for_messages(node, "alice-b", {("all", "fence")})
    assert ("group", "after revocation") not in _messages(node, "alice-b")

    # "Disconnect everywhere" asked of B: alice's connection on A closes within 1 s; bob stays.
    started = time.monotonic()
    assert cluster.b.post_json("/test/account", {"username": "alice", "action": "disconnect"}) == {"ok": True}
    error = _closed_error(node, "alice-a", 1.0)
    closed_after = time.monotonic() - started
    assert error == "Server returned an error on close: Disconnected by an administrator."
    assert _closed_error(node, "alice-b", 1.0) == "Server returned an error on close: Disconnected by an administrator."
    assert closed_after < 1.0 + POLL_SLACK, f"disconnect took {closed_after:.3f} s"
    assert node.invoke("bob-b", "Echo", "still here") == "still here"

    # And from this process (a worker with no connections): bob's connection on B closes within 1 s.
    _connect(node, "bob-a", cluster.a, live_users["bob"])
    started = time.monotonic()
    get_hub_context(InteropHub).sync.disconnect_user(get_user_model().objects.get(username="bob"), reason="Bye.")
    for name in ("bob-a", "bob-b"):
        assert _closed_error(node, name, 1.0) == "Server returned an error on close: Bye."
    from_here = time.monotonic() - started
    assert from_here < 1.0 + POLL_SLACK
    print(
        f"{cluster.layer}: revocation on the other process seen after {revoked_after:.3f} s, disconnect "
        f"everywhere after {closed_after:.3f} s (from this process: {from_here:.3f} s)"
    )


# ---------------------------------------------------------------- 4. user-scoped membership survives a killed server


RECONNECT_DELAYS = [0] + [250] * 80  # about 20 s of attempts, 4 per second


def test_user_scoped_membership_survives_a_killed_server(cluster_settings, live_users, node: NodeDriver):
    cluster = cluster_settings
    groups = get_hub_context(InteropHub).sync.groups
    here = get_hub_context(InteropHub).sync.clients
    _connect(node, "alice-a", cluster.a, live_users["alice"])
    _connect(node, "alice-b", cluster.b, live_users["alice"], reconnect=RECONNECT_DELAYS)
    _connect(node, "bob-a", cluster.a, live_users["bob"])

    # From this process: both of alice's connections, one per server, join at once.
    assert groups.add_user_to_group("alice", "alice-team") is True
    assert groups.get_user_groups("alice") == ["alice-team"]
    node.invoke("bob-a", "SendToGroup", "alice-team", "before")
    for name in ("alice-a", "alice-b"):
        _wait_for_messages(node, name, {("group", "before")})
    members = groups.get_members("alice-team")
    assert (members.connection_count, members.users, members.complete) == (2, frozenset({"alice"}), True)

    # B dies without any clean-up; the official client reconnects to the restarted B by itself.
    cluster.kill(1)
    node.wait_for("alice-b", lambda ev: any(e["target"] == "__reconnecting__" for e in ev), 10)
    cluster.restart(1)
    events = node.wait_for("alice-b", lambda ev: any(e["target"] == "__reconnected__" for e in ev), 30)
    assert not any(e["target"] == "__closed__" for e in events)
    assert node.invoke("alice-b", "Echo", "registered") == "registered"

    # No JoinGroup: the new connection on B joined alice's stored group as it connected.
    node.invoke("bob-a", "SendToGroup", "alice-team", "after-a")
    here.group("alice-team").send("Receive", "group", "after-here")
    after = {("group", "after-a"), ("group", "after-here")}
    for name in ("alice-a", "alice-b"):
        _wait_for_messages(node, name, after)
    # A new device on the restarted process joins too.
    _connect(node, "alice-b2", cluster.b, live_users["alice"])
    node.invoke("bob-a", "SendToGroup", "alice-team", "new device")
    for name in ("alice-a", "alice-b", "alice-b2"):
        _wait_for_messages(node, name, {("group", "new device")})
    # Exactly once each, even with a dead process's channel possibly still in the layer group.
    node.invoke("bob-a", "SendToAll", "fence")
    for name in ("alice-a", "alice-b", "alice-b2"):
        _wait_for_messages(node, name, {("all", "fence")})
        assert all(count == 1 for count in _messages(node, name).values()), _messages(node, name)
    assert _messages(node, "bob-a") == Counter({("all", "fence"): 1})  # bob is not in alice's group

    # Ending the membership takes every connection out, on both processes.
    groups.remove_user_from_group("alice", "alice-team")
    assert groups.get_user_groups("alice") == []
    node.invoke("bob-a", "SendToGroup", "alice-team", "gone")
    node.invoke("bob-a", "SendToAll", "fence 2")
    for name in ("alice-a", "alice-b", "alice-b2"):
        _wait_for_messages(node, name, {("all", "fence 2")})
        assert ("group", "gone") not in _messages(node, name)


# ---------------------------------------------------------------- 5. counts agree; a killed process drops out


def test_counts_agree_across_processes_and_forget_a_killed_one(cluster_settings, live_users, node: NodeDriver):
    cluster = cluster_settings
    groups = get_hub_context(InteropHub).sync.groups
    admin_cookie = _superuser_cookie()
    ids = {
        "alice-a": _connect(node, "alice-a", cluster.a, live_users["alice"]),
        "anon-a": _connect(node, "anon-a", cluster.a, None),
        "alice-b": _connect(node, "alice-b", cluster.b, live_users["alice"]),
        "bob-b": _connect(node, "bob-b", cluster.b, live_users["bob"]),
        "carol-b": _connect(node, "carol-b", cluster.b, live_users["carol"]),
    }
    for name in ("alice-a", "anon-a", "alice-b", "bob-b"):
        assert node.invoke(name, "JoinGroup", "count-room") is True

    # This process (no connections) counts 4 connections of 2 people and 1 anonymous one.
    assert groups.get_members("count-room") == GroupMembers(4, frozenset({"alice", "bob"}), 1, True)
    listing = get_hub_context(InteropHub).sync.get_connections(group="count-room")
    assert {info.connection_id for info in listing} == {ids[n] for n in ("alice-a", "anon-a", "alice-b", "bob-b")}
    assert len({info.process for info in listing}) == 2
    # Each server process, asked through its own admin page, agrees.
    for server in cluster.servers:
        page = _admin_page(server, admin_cookie, "hub=interop")
        assert _group_row(page, "count-room") == (4, 2), page
        assert _user_rows(page) == {"(anonymous)": 1, "alice": 2, "bob": 1, "carol": 1}
        assert "2 server processes" in _summary(page)

    # SIGKILL B: its three connections must leave every count and listing (the issue: within 60 s).
    cluster.kill(1)
    started = time.monotonic()
    survivors = {ids["alice-a"], ids["anon-a"]}
    deadline = started + 60
    while True:
        members = groups.get_members("count-room")
        everyone = {info.connection_id for info in get_hub_context(InteropHub).sync.get_connections()}
        page = _admin_page(cluster.a, admin_cookie, "hub=interop")
        if (
            members == GroupMembers(2, frozenset({"alice"}), 1, True)
            and everyone == survivors
            and _group_row(page, "count-room") == (2, 1)
            and "1 server process" in _summary(page)
        ):
            break
        assert time.monotonic() < deadline, f"{cluster.layer}: after 60 s: {members}, {everyone}, {_summary(page)}"
        time.sleep(0.5)
    print(f"{cluster.layer}: a SIGKILLed process left the counts after {time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------- 7. the admin's live connections page


def test_admin_live_connections_lists_both_processes_and_disconnects_on_the_other(
    cluster_settings, live_users, node: NodeDriver
):
    cluster = cluster_settings
    ids = {
        "alice-a": _connect(node, "alice-a", cluster.a, live_users["alice"]),
        "alice-b": _connect(node, "alice-b", cluster.b, live_users["alice"]),
        "bob-b": _connect(node, "bob-b", cluster.b, live_users["bob"]),
    }
    for name in ("alice-a", "bob-b"):
        assert node.invoke(name, "JoinGroup", "lobby") is True
    admin = get_user_model().objects.create_user(username="admin", password="x", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)

    page = client.get(ADMIN_PAGE + "?hub=interop")
    assert page.status_code == 200
    html = page.content.decode()
    assert all(connection_id in _listed(html) for connection_id in ids.values())
    assert _summary(html) == "3 live connections · 2 users · 2 server processes"
    assert _user_rows(html) == {"alice": 2, "bob": 1}
    assert _group_row(html, "lobby") == (2, 2)
    by_user = _listed(client.get(ADMIN_PAGE + "?hub=interop&user=alice").content.decode())
    assert ids["alice-a"] in by_user and ids["alice-b"] in by_user and ids["bob-b"] not in by_user
    by_group = _listed(client.get(ADMIN_PAGE + "?hub=interop&group=lobby").content.decode())
    assert ids["alice-a"] in by_group and ids["bob-b"] in by_group and ids["alice-b"] not in by_group

    # Disconnect one connection held by B (this process holds none): only that one closes.
    answer = client.post(ADMIN_PAGE + "?hub=interop", {"connection_id": ids["alice-b"]})
    assert answer.status_code == 302
    closed = "Server returned an error on close: Disconnected by an administrator."
    assert _closed_error(node, "alice-b", 2.0) == closed
    assert node.invoke("alice-a", "Echo", "open") == "open"
    # And every connection of a user, wherever they are.
    assert client.post(ADMIN_PAGE + "?hub=interop", {"user": "bob"}).status_code == 302
    assert _closed_error(node, "bob-b", 2.0) == closed
    html = client.get(ADMIN_PAGE + "?hub=interop").content.decode()
    assert _summary(html) == "1 live connection · 1 user · 1 server process"
    assert ids["alice-a"] in _listed(html) and ids["alice-b"] not in _listed(html)


async def _seq_receiver(url: str, group: str, ready: asyncio.Event, got: list[int], quiet: float) -> None:
    """Join ``group`` and collect every ``Seq`` number until the server goes quiet (or the socket ends)."""
    try:
        async with connect(url, open_timeout=15, max_size=None) as ws:
            await ws.send(HANDSHAKE)
            await ws.recv()
            await ws.send(
                json.dumps({"type": 1, "invocationId": "j", "target": "JoinGroup", "arguments": [group]}) + RS
            )
            while '"invocationId":"j"' not in str(await ws.recv()):
                pass
            ready.set()
            while True:
                frame = await asyncio.wait_for(ws.recv(), quiet)
                for record in str(frame).split(RS):
                    if record:
                        message = json.loads(record)
                        if message.get("target") == "Seq":
                            got.append(int(message["arguments"][0]))
    except (TimeoutError, ConnectionError, OSError):
        return
    except Exception as exc:  # the server went away: what was received is what counts
        if "ConnectionClosed" not in type(exc).__name__:
            raise


async def test_row41_a_server_killed_mid_fan_out_sends_each_message_once_or_not_at_all(cluster_settings):
    """A fan-out from A to members on B and on A; A is SIGKILLed in the middle of it."""
    cluster = cluster_settings
    group = f"row41-{cluster.layer}"
    b_got: list[list[int]] = [[] for _ in range(10)]
    a_got: list[list[int]] = [[] for _ in range(5)]
    events = [asyncio.Event() for _ in range(15)]
    receivers = [
        asyncio.ensure_future(_seq_receiver(cluster.b.ws_url + "/interop", group, events[i], b_got[i], 3.0))
        for i in range(10)
    ] + [
        asyncio.ensure_future(_seq_receiver(cluster.a.ws_url + "/interop", group, events[10 + i], a_got[i], 3.0))
        for i in range(5)
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 20)
    async with connect(cluster.a.ws_url + "/interop", open_timeout=15) as sender:
        await sender.send(HANDSHAKE)
        await sender.recv()
        invocation = {"type": 1, "target": "SendSequence", "arguments": [group, 1_000_000]}
        await sender.send(json.dumps(invocation) + RS)
        for _ in range(200):  # at most 10 s for the first message to reach B
            if any(b_got):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # well into the fan-out
        cluster.kill(0)
    await asyncio.wait_for(asyncio.gather(*receivers), 60)
    counts = [len(got) for got in b_got]
    print(f"{cluster.layer}: after A was killed mid fan-out, B's members got {min(counts)}–{max(counts)} messages")
    assert min(counts) > 0, "the fan-out did not reach B before the kill"
    for got in b_got + a_got:
        assert len(got) == len(set(got)), "a member got a message twice"
        assert got == sorted(got), "a member got messages out of order"


def test_client_results_across_processes(cluster_settings, live_users, node: NodeDriver):
    """A client on B answers client results asked by a hub method on A and by a Django view on A (through
    the hub context): its value, its thrown error, its silence (a timeout), and its leaving (gone)."""
    cluster = cluster_settings
    results = {"GetMessage": {"value": "x"}, "Boom": {"throw": "boom"}, "Hang": {"hang": True}}
    answerer = _connect(node, "answerer", cluster.b, live_users["alice"], results=results)
    leaver = _connect(node, "leaver", cluster.b, live_users["bob"], results=results)
    _connect(node, "asker", cluster.a, live_users["bob"])

    assert node.invoke("asker", "AskClient", answerer, "GetMessage", 5) == {"result": "x"}
    assert cluster.a.post_json("/ctx/ask", {"connection_id": answerer, "target": "GetMessage", "timeout": 5}) == {
        "result": "x"
    }
    thrown = node.invoke("asker", "AskClient", answerer, "Boom", 5)
    assert thrown["error"] == "ClientResultError" and "boom" in thrown["message"], thrown
    started = time.monotonic()
    silent = cluster.a.post_json("/ctx/ask", {"connection_id": answerer, "target": "Hang", "timeout": 0.5})
    assert silent["error"] == "ClientResultTimeoutError" and time.monotonic() - started < 3, silent

    outcome: dict[str, Any] = {}
    asking = threading.Thread(
        target=lambda: outcome.update(
            cluster.a.post_json("/ctx/ask", {"connection_id": leaver, "target": "Hang", "timeout": 8})
        )
    )
    asking.start()
    node.wait_for("leaver", lambda events: any(e["target"] == "__asked__" for e in events))
    node.stop("leaver")
    asking.join(10)
    assert outcome.get("error") == "ClientGoneError", outcome
