"""The demo ChatHub's room methods, through the official JS client against daphne: the rules the page relies on."""

from __future__ import annotations

import pytest

from tests.live import InvocationError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rooms(live_users):
    from hubproject.chat.models import Room

    Room.objects.create(slug="lobby", name="Lobby")
    Room.objects.create(slug="vip-lounge", name="VIP lounge")
    return live_users


def _events(events, target):
    return [event["args"] for event in events if event.get("target") == target]


def test_rooms_history_presence_and_rules(live_server_process, rooms, node):
    from hubproject.chat.models import Message

    url = live_server_process.http_url + "/chatHub"
    events = ("RoomMessage", "Presence", "PrivateMessage")
    node.connect("alice", url, cookie=rooms["alice"], events=events)
    node.connect("alice2", url, cookie=rooms["alice"], events=events)
    node.connect("bob", url, cookie=rooms["bob"], events=events)
    node.connect("anon", url, events=events)

    with pytest.raises(InvocationError, match="You are not in the room 'lobby'"):
        node.invoke("alice", "SendToRoom", "lobby", "not joined yet")
    with pytest.raises(InvocationError, match="There is no room called 'nowhere'"):
        node.invoke("alice", "JoinRoom", "nowhere", 0)
    with pytest.raises(InvocationError, match="needs a grant"):
        node.invoke("alice", "JoinRoom", "vip-lounge", 0)
    with pytest.raises(InvocationError):  # anonymous: the room methods need a login
        node.invoke("anon", "JoinRoom", "lobby", 0)

    assert node.invoke("alice", "JoinRoom", "lobby", 0) == {"missed": []}
    node.invoke("alice2", "JoinRoom", "lobby", 0)
    node.invoke("bob", "JoinRoom", "lobby", 0)
    node.wait_for("alice", lambda ev: ["lobby", ["alice", "bob"]] in _events(ev, "Presence"))

    with pytest.raises(InvocationError, match="The message is empty"):
        node.invoke("bob", "SendToRoom", "lobby", "   ")
    with pytest.raises(InvocationError, match="at most 2000 characters"):
        node.invoke("bob", "SendToRoom", "lobby", "x" * 2001)
    node.invoke("bob", "SendToRoom", "lobby", "  hello <b>all</b>  ")
    for device in ("alice", "alice2", "bob"):
        node.wait_for(
            device, lambda ev: any(args[1]["text"] == "hello <b>all</b>" for args in _events(ev, "RoomMessage"))
        )
    stored = Message.objects.get()
    assert (stored.author_name, stored.text, stored.room.slug) == ("bob", "hello <b>all</b>", "lobby")
    # A page that reconnects asks for what came after the last message it showed.
    missed = node.invoke("alice", "JoinRoom", "lobby", 0)["missed"]
    assert [(m["id"], m["author"], m["text"]) for m in missed] == [(stored.pk, "bob", "hello <b>all</b>")]
    assert node.invoke("alice", "JoinRoom", "lobby", stored.pk) == {"missed": []}

    node.invoke("bob", "SendPrivate", "alice", "psst")
    for device in ("alice", "alice2"):
        node.wait_for(device, lambda ev: any(args[0]["text"] == "psst" for args in _events(ev, "PrivateMessage")))
    assert _events(node.collect("bob"), "PrivateMessage") == []
    with pytest.raises(InvocationError, match="There is no user called 'zed'"):
        node.invoke("bob", "SendPrivate", "zed", "hello")

    # Leaving (or closing the page) updates the others' presence: people, not tabs.
    node.invoke("alice", "LeaveRoom", "lobby")
    node.stop("alice2")
    node.wait_for("bob", lambda ev: ["lobby", ["bob"]] in _events(ev, "Presence"))
    with pytest.raises(InvocationError, match="You are not in the room 'lobby'"):
        node.invoke("alice", "SendToRoom", "lobby", "after leaving")
