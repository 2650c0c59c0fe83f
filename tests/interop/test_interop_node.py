"""Interop with the official @microsoft/signalr client under Node, against a real daphne process."""

from __future__ import annotations

import pytest

from tests.live import InvocationError, NodeDriver, received

pytestmark = pytest.mark.timeout(60)


def _messages(node: NodeDriver, name: str, target: str = "Receive") -> list[list[object]]:
    return received(node.collect(name), target)


def _settle(node: NodeDriver, *names: str, chat: bool = False) -> None:
    """Round-trip every connection once so that anything already sent to it has arrived."""
    for name in names:
        if chat:
            node.invoke(name, "RemoveFromGroup", "nobody is in this group")
        else:
            node.invoke(name, "Echo", "sync")


@pytest.fixture
def four(live_server_process, live_users, node):
    """Alice on two devices, bob, and an anonymous connection, all on /interop."""
    url = live_server_process.http_url + "/interop"
    ids = {
        "a1": node.connect("a1", url, cookie=live_users["alice"]),
        "a2": node.connect("a2", url, cookie=live_users["alice"]),
        "b": node.connect("b", url, cookie=live_users["bob"]),
        "anon": node.connect("anon", url),
    }
    assert all(ids.values())
    return node, ids


def test_docs_groups_sample_flow(live_server_process, live_users, node):
    """The ASP.NET Core docs' groups sample, unchanged: AddToGroup, SendMessageToGroup, SendPrivateMessage."""
    url = live_server_process.http_url + "/chatHub"
    events = ("Send", "ReceiveMessage")
    node.connect("alice_desktop", url, cookie=live_users["alice"], events=events)
    node.connect("alice_phone", url, cookie=live_users["alice"], events=events)
    node.connect("bob", url, cookie=live_users["bob"], events=events)

    node.invoke("alice_desktop", "AddToGroup", "lobby")
    node.invoke("bob", "AddToGroup", "lobby")
    node.invoke("bob", "SendMessageToGroup", "lobby", "hi all")
    node.wait_for("alice_desktop", lambda ev: ["bob: hi all"] in received(ev, "Send"))
    assert received(node.collect("alice_desktop"), "Send") == [
        ["alice has joined the group lobby."],
        ["bob has joined the group lobby."],
        ["bob: hi all"],
    ]
    _settle(node, "alice_phone", chat=True)
    assert received(node.collect("alice_phone"), "Send") == []  # the phone never joined the room

    node.invoke("bob", "SendPrivateMessage", "alice", "psst")
    for device in ("alice_desktop", "alice_phone"):
        node.wait_for(device, lambda ev: received(ev, "ReceiveMessage") == [["bob: psst"]])
    _settle(node, "bob", chat=True)
    assert received(node.collect("bob"), "ReceiveMessage") == []

    node.invoke("alice_desktop", "RemoveFromGroup", "lobby")
    node.wait_for("bob", lambda ev: ["alice has left the group lobby."] in received(ev, "Send"))
    node.invoke("bob", "SendMessageToGroup", "lobby", "anyone?")
    node.wait_for("bob", lambda ev: ["bob: anyone?"] in received(ev, "Send"))
    _settle(node, "alice_desktop", chat=True)
    assert ["bob: anyone?"] not in received(node.collect("alice_desktop"), "Send")


def test_identity(four):
    node, ids = four
    assert node.invoke("a1", "GetUserIdentifier") == "alice"
    assert node.invoke("b", "GetUserIdentifier") == "bob"
    assert node.invoke("anon", "GetUserIdentifier") is None
    assert node.invoke("a1", "GetConnectionId") == ids["a1"]
    assert ids["a1"] != ids["a2"]
    assert node.invoke("a1", "CountCalls") == 1
    assert node.invoke("a1", "CountCalls") == 2  # context.items lives as long as the connection
    assert node.invoke("a2", "CountCalls") == 1


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("SendToAll", ["m"], {"a1", "a2", "b", "anon"}),
        ("SendToCaller", ["m"], {"a1"}),
        ("SendToOthers", ["m"], {"a2", "b", "anon"}),
        ("SendToClient", ["<b>", "m"], {"b"}),
        ("SendToClients", [["<b>", "<anon>"], "m"], {"b", "anon"}),
        ("SendToAllExcept", [["<a2>", "<b>"], "m"], {"a1", "anon"}),
        ("SendToUser", ["alice", "m"], {"a1", "a2"}),
        ("SendToUser", ["bob", "m"], {"b"}),
        ("SendToUser", ["nobody", "m"], set()),
        ("SendToUsers", [["alice", "bob"], "m"], {"a1", "a2", "b"}),
    ],
)
def test_every_client_target(four, method, args, expected):
    node, ids = four

    def resolve(value):
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if isinstance(value, str) and value.startswith("<"):
            return ids[value[1:-1]]
        return value

    node.invoke("a1", method, *[resolve(arg) for arg in args])
    names = ("a1", "a2", "b", "anon")
    for name in expected:
        node.wait_for(name, lambda ev: received(ev))
    _settle(node, *names)
    got = {name for name in names if _messages(node, name)}
    assert got == expected
    for name in expected:
        assert len(received(node.events[name])) == 1  # exactly once


def test_group_targets(four):
    node, ids = four
    assert node.invoke("a1", "JoinGroup", "red") is True
    assert node.invoke("a2", "JoinGroup", "red") is True
    assert node.invoke("b", "JoinGroup", "blue") is True
    assert node.invoke("a1", "JoinGroup", "blue") is True  # a connection in several groups
    assert node.invoke("a1", "JoinGroup", "blue") is True  # idempotent
    names = ("a1", "a2", "b", "anon")

    def deliveries(method, *args):
        for name in names:
            node.events[name].clear()
            node.collect(name)
            node.events[name].clear()
        node.invoke("anon", method, *args)
        _settle(node, *names)
        return {name: [message for _kind, message in _messages(node, name)] for name in names}

    assert deliveries("SendToGroup", "red", "r") == {"a1": ["r"], "a2": ["r"], "b": [], "anon": []}
    assert deliveries("SendToGroup", "blue", "b") == {"a1": ["b"], "a2": [], "b": ["b"], "anon": []}
    # Several groups: a1 is in both but receives once.
    assert deliveries("SendToGroups", ["red", "blue"], "rb") == {"a1": ["rb"], "a2": ["rb"], "b": ["rb"], "anon": []}
    assert deliveries("SendToGroupExcept", "red", [ids["a2"]], "x") == {"a1": ["x"], "a2": [], "b": [], "anon": []}
    node.invoke("a2", "SendToOthersInGroup", "red", "o")
    _settle(node, *names)
    assert [m for _k, m in _messages(node, "a1")][-1:] == ["o"]
    assert "o" not in [m for _k, m in received(node.events["a2"])]

    # Leaving stops delivery; the other group still works.
    assert node.invoke("a1", "LeaveGroup", "red") is True
    assert deliveries("SendToGroup", "red", "after") == {"a1": [], "a2": ["after"], "b": [], "anon": []}
    assert deliveries("SendToGroup", "blue", "still") == {"a1": ["still"], "a2": [], "b": ["still"], "anon": []}


def test_groups_are_scoped_per_hub(live_server_process, node):
    node.connect("interop", live_server_process.http_url + "/interop")
    node.connect("other", live_server_process.http_url + "/other")
    node.invoke("interop", "JoinGroup", "lobby")
    node.invoke("other", "JoinGroup", "lobby")
    node.invoke("interop", "SendToGroup", "lobby", "from interop")
    node.wait_for("interop", lambda ev: received(ev))
    _settle(node, "interop")
    node.invoke("other", "SendToGroup", "lobby", "from other")
    node.wait_for("other", lambda ev: received(ev))
    assert received(node.collect("other")) == [["group", "from other"]]
    assert received(node.collect("interop")) == [["group", "from interop"]]


def test_leaving_on_disconnect_is_automatic(four):
    node, _ids = four
    node.invoke("a1", "JoinGroup", "g")
    node.invoke("b", "JoinGroup", "g")
    node.stop("a1")
    node.invoke("b", "SendToGroup", "g", "m")
    node.wait_for("b", lambda ev: received(ev))
    assert received(node.collect("b")) == [["group", "m"]]


def test_hub_context_from_a_django_view(four, live_server_process):
    """A sync view sends through get_hub_context(...).sync; an async view adds a connection by id."""
    node, ids = four
    server = live_server_process
    assert server.post_json("/ctx/send", {"kind": "user", "name": "alice", "message": "to alice"}) == {"ok": True}
    for name in ("a1", "a2"):
        node.wait_for(name, lambda ev: ["ctx-user", "to alice"] in received(ev))

    assert server.post_json("/ctx/group", {"action": "add", "connection_id": ids["b"], "group": "vip"}) == {"ok": True}
    server.post_json("/ctx/send", {"kind": "group", "name": "vip", "message": "welcome"})
    node.wait_for("b", lambda ev: ["ctx-group", "welcome"] in received(ev))

    server.post_json("/ctx/send", {"kind": "all_except", "exclude": [ids["anon"]], "message": "not anon"})
    for name in ("a1", "a2", "b"):
        node.wait_for(name, lambda ev: ["ctx-all_except", "not anon"] in received(ev))

    assert server.post_json("/ctx/group", {"action": "remove", "connection_id": ids["b"], "group": "vip"}) == {
        "ok": True
    }
    server.post_json("/ctx/send", {"kind": "group", "name": "vip", "message": "gone"})
    server.post_json("/ctx/send", {"kind": "client", "name": ids["b"], "message": "marker"})
    node.wait_for("b", lambda ev: ["ctx-client", "marker"] in received(ev))
    assert ["ctx-group", "gone"] not in received(node.events["b"])
    _settle(node, "anon")
    assert ["ctx-all_except", "not anon"] not in received(node.collect("anon"))

    unknown = server.post_json("/ctx/group", {"action": "add", "connection_id": "no-such-connection", "group": "vip"})
    assert unknown == {"ok": False}


def test_skip_negotiation(live_server_process, live_users, node):
    url = live_server_process.http_url + "/interop"
    assert node.connect("direct", url, skipNegotiation=True, cookie=live_users["bob"]) is None
    assert node.invoke("direct", "Echo", {"nested": [1, 2.5, None, True]}) == {"nested": [1, 2.5, None, True]}
    assert node.invoke("direct", "GetUserIdentifier") == "bob"
    assert len(node.invoke("direct", "GetConnectionId")) == 22


def test_errors_arrive_as_completion_errors_and_the_connection_stays_open(live_server_process, node):
    node.connect("c", live_server_process.http_url + "/interop")
    cases = [
        (
            ("Fail", "not allowed"),
            "An unexpected error occurred invoking 'Fail' on the server. HubException: not allowed",
        ),
        (("Crash",), "An unexpected error occurred invoking 'Crash' on the server."),
        (("Nope",), "Unknown hub method 'Nope'"),
        (("NotExposed",), "Unknown hub method 'NotExposed'"),
        (("Add", 1), "Failed to invoke 'Add' due to an error on the server."),
        (("Add", 1, 2, 3), "Failed to invoke 'Add' due to an error on the server."),
        (("Add", "1", 2), "Failed to invoke 'Add' due to an error on the server."),
        (
            ("JoinGroup", ""),
            "An unexpected error occurred invoking 'JoinGroup' on the server. HubException: A group name must not be empty.",
        ),
    ]
    for (method, *args), message in cases:
        with pytest.raises(InvocationError) as info:
            node.invoke("c", method, *args)
        assert str(info.value) == message
        assert node.invoke("c", "Echo", "still here") == "still here"
    assert node.invoke("c", "Add", 2, 3) == 5
    assert node.invoke("c", "add", 2, 3) == 5  # method names match case-insensitively
    assert node.invoke("c", "Renamed") == "renamed"
    assert node.invoke("c", "Nothing") is None
    assert node.invoke("c", "SyncEcho", "x") == {"value": "x", "main_thread": False}
    assert "secret internal detail" not in str(node.call("state", name="c"))


def test_abort_closes_without_reconnect(live_server_process, node):
    node.connect("c", live_server_process.http_url + "/interop", reconnect=[0, 0])
    node.send("c", "AbortMe")
    events = node.wait_for("c", lambda ev: any(event["target"] == "__closed__" for event in ev))
    assert not any(event["target"] == "__reconnecting__" for event in events)
    assert node.call("state", name="c")["state"] == "Disconnected"
