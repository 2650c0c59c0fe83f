"""The demo ChatHub's room methods, through the official JS client against daphne: the rules the page relies on."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from tests.live import InvocationError, ServerProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rooms(live_users):
    from hubproject.chat.models import Room

    Room.objects.create(slug="lobby", name="Lobby")
    Room.objects.create(slug="vip-lounge", name="VIP lounge")
    return live_users


@pytest.fixture(params=["daphne", "uvicorn"])
def any_server(request, live_server_process, tmp_path):
    """The session's daphne, or a uvicorn process of the same project."""
    if request.param == "daphne":
        yield live_server_process
        return
    process = ServerProcess(tmp_path / "uvicorn.log", str(settings.DATABASES["default"]["NAME"]), server="uvicorn")
    yield process
    process.stop()


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

    assert node.invoke("alice", "JoinRoom", "lobby", 0) == {"missed": [], "gap": False}
    node.invoke("alice2", "JoinRoom", "lobby", 0)
    node.invoke("bob", "JoinRoom", "lobby", 0)
    node.wait_for("alice", lambda ev: any(args[:2] == ["lobby", ["alice", "bob"]] for args in _events(ev, "Presence")))

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
    assert node.invoke("alice", "JoinRoom", "lobby", stored.pk) == {"missed": [], "gap": False}

    node.invoke("bob", "SendPrivate", "alice", "psst")
    for device in ("alice", "alice2"):
        node.wait_for(device, lambda ev: any(args[0]["text"] == "psst" for args in _events(ev, "PrivateMessage")))
    assert _events(node.collect("bob"), "PrivateMessage") == []
    with pytest.raises(InvocationError, match="There is no user called 'zed'"):
        node.invoke("bob", "SendPrivate", "zed", "hello")

    # Leaving (or closing the page) updates the others' presence: people, not tabs.
    node.invoke("alice", "LeaveRoom", "lobby")
    node.stop("alice2")
    node.wait_for("bob", lambda ev: any(args[:2] == ["lobby", ["bob"]] for args in _events(ev, "Presence")))
    with pytest.raises(InvocationError, match="You are not in the room 'lobby'"):
        node.invoke("alice", "SendToRoom", "lobby", "after leaving")


def test_catch_up_says_when_it_is_cut_short(live_server_process, rooms, node):
    from hubproject.chat.models import HISTORY_LENGTH, Message, Room

    lobby = Room.objects.get(slug="lobby")
    first = Message.objects.create(room=lobby, author_name="bob", text="seen")
    Message.objects.bulk_create(
        Message(room=lobby, author_name="bob", text=f"missed {n}") for n in range(HISTORY_LENGTH + 5)
    )
    url = live_server_process.http_url + "/chatHub"
    node.connect("alice", url, cookie=rooms["alice"])
    result = node.invoke("alice", "JoinRoom", "lobby", first.pk)
    assert result["gap"] is True
    assert [m["text"] for m in result["missed"]] == [f"missed {n}" for n in range(5, HISTORY_LENGTH + 5)]
    last = result["missed"][-1]["id"]
    assert node.invoke("alice", "JoinRoom", "lobby", last - 3)["gap"] is False


def test_no_hub_method_lets_an_anonymous_client_into_a_login_only_room(any_server, rooms, node):
    """The docs sample's methods work on their own groups: a room's messages and presence stay with its members."""
    url = any_server.http_url + "/chatHub"
    events = ("RoomMessage", "Presence", "Send", "ReceiveMessage", "PrivateMessage")
    node.connect("anon", url, events=events)
    node.connect("bob", url, cookie=rooms["bob"], events=events)
    node.invoke("bob", "JoinRoom", "lobby", 0)
    for room in ("lobby", "vip-lounge"):
        node.invoke("anon", "AddToGroup", room)  # joins the sample's group of that name, not the room
        node.invoke("anon", "SendMessageToGroup", room, "spoofed")
    with pytest.raises(InvocationError, match="unauthorized"):
        node.invoke("anon", "JoinRoom", "lobby", 0)
    with pytest.raises(InvocationError, match="unauthorized"):
        node.invoke("anon", "SendPrivateMessage", "bob", "hello from nobody")
    node.invoke("bob", "SendToRoom", "lobby", "members only")
    node.wait_for("bob", lambda ev: any(args[1]["text"] == "members only" for args in _events(ev, "RoomMessage")))
    time.sleep(0.3)
    anon = node.collect("anon")
    assert _events(anon, "RoomMessage") == [] and _events(anon, "Presence") == []  # nothing of the room
    bob = node.collect("bob")
    assert not any("spoofed" in str(args) for args in _events(bob, "RoomMessage") + _events(bob, "Send"))
    assert _events(bob, "ReceiveMessage") == [] and _events(bob, "PrivateMessage") == []
    # The sample itself still works as in the docs, within its own groups.
    node.invoke("bob", "AddToGroup", "lobby")
    node.invoke("anon", "SendMessageToGroup", "lobby", "open groups take anyone's message, as in the docs")
    node.wait_for("bob", lambda ev: any("as in the docs" in args[0] for args in _events(ev, "Send")))


def test_a_revoked_member_leaves_the_others_presence_at_once(live_server_process, rooms, node):
    """Hub.on_group_access_revoked: the server itself tells the room, whatever the revoked client does."""
    from django.contrib.auth import get_user_model

    from signalr_groups.models import GroupGrant

    users = get_user_model().objects
    grant = GroupGrant.objects.create(hub="chat", group="vip-lounge", user=users.get(username="alice"))
    GroupGrant.objects.create(hub="chat", group="vip-*", user=users.get(username="bob"))
    url = live_server_process.http_url + "/chatHub"
    node.connect("alice", url, cookie=rooms["alice"], events=("GroupAccessRevoked",))
    node.connect("bob", url, cookie=rooms["bob"], events=("Presence",))
    node.invoke("alice", "JoinRoom", "vip-lounge", 0)
    node.invoke("bob", "JoinRoom", "vip-lounge", 0)
    node.wait_for(
        "bob", lambda ev: any(args[:2] == ["vip-lounge", ["alice", "bob"]] for args in _events(ev, "Presence"))
    )
    assert live_server_process.post_json("/test/grant", {"action": "revoke", "grant": grant.pk}) == {"ok": True}
    node.wait_for("alice", lambda ev: _events(ev, "GroupAccessRevoked") == [["vip-lounge", "revoked"]])
    # alice's client does nothing more (no LeaveRoom): bob's presence still drops her.
    node.wait_for("bob", lambda ev: _events(ev, "Presence")[-1][:2] == ["vip-lounge", ["bob"]])
