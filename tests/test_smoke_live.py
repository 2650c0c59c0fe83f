"""First light: the official client against the real server."""

from __future__ import annotations

from tests.live import received


def test_echo_and_group(live_server_process, live_users, node):
    url = live_server_process.http_url + "/interop"
    node.connect("a", url, cookie=live_users["alice"])
    assert node.invoke("a", "Echo", "hi") == "hi"
    assert node.invoke("a", "GetUserIdentifier") == "alice"
    assert node.invoke("a", "JoinGroup", "room 1") is True
    node.invoke("a", "SendToGroup", "room 1", "hello")
    events = node.wait_for("a", lambda ev: received(ev))
    assert received(events) == [["group", "hello"]]
