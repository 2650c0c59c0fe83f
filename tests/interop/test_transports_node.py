"""Every transport × hub protocol with the official @microsoft/signalr client (and its MessagePack package) under Node,
on daphne and on uvicorn.

The docs' groups sample runs unchanged for each allowed pair of {WebSockets, ServerSentEvents,
LongPolling} × {JSON, MessagePack} (MessagePack over Server-Sent Events is refused, as .NET
refuses it), once with a session cookie and once with a bearer token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from signalr_groups.auth.access_tokens import issue_access_token
from signalr_groups.models import GroupGrant
from tests.live import InvocationError, NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(90)

TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")
PROTOCOLS = ("json", "messagepack")
PAIRS = [(t, p) for t in TRANSPORTS for p in PROTOCOLS if not (t == "ServerSentEvents" and p == "messagepack")]
#: The class name of the client's transport object, by transport.
CLIENT_CLASSES = {
    "WebSockets": "WebSocketTransport",
    "ServerSentEvents": "ServerSentEventsTransport",
    "LongPolling": "LongPollingTransport",
}


@pytest.fixture(scope="module")
def uvicorn_server(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """A uvicorn process serving the same project (the same database) as the session's daphne."""
    log_path = tmp_path_factory.mktemp("uvicorn-transports") / "server.log"
    server = ServerProcess(log_path, str(settings.DATABASES["default"]["NAME"]), server="uvicorn")
    yield server
    server.stop()


@pytest.fixture(params=["daphne", "uvicorn"])
def any_server(request, live_server_process, uvicorn_server) -> ServerProcess:
    """Each server we support: the session's daphne, then uvicorn."""
    return live_server_process if request.param == "daphne" else uvicorn_server


def _credentials(auth: str, live_users: dict[str, str], name: str) -> dict[str, Any]:
    if auth == "cookie":
        return {"cookie": live_users[name]}
    return {"accessToken": issue_access_token(get_user_model().objects.get(username=name))}


def _connect(node: NodeDriver, name: str, url: str, transport: str, protocol: str, **options: Any) -> None:
    headers = {"Cookie": options.pop("cookie")} if "cookie" in options else {}
    reply = node.call(
        "connect",
        name=name,
        url=url,
        headers=headers,
        events=["Send", "ReceiveMessage"],
        transport=transport,
        protocol=protocol,
        **options,
    )
    if not reply["ok"]:
        raise RuntimeError(f"connect {name} failed: {reply['error']}")
    assert reply["transport"] == CLIENT_CLASSES[transport]
    node.events[name] = []


@pytest.mark.parametrize("auth", ["cookie", "bearer"])
@pytest.mark.parametrize(("transport", "protocol"), PAIRS, ids=[f"{t}-{p}" for t, p in PAIRS])
def test_docs_sample_flow(any_server, live_users, node, transport, protocol, auth):
    """Groups, a user on two devices, a private message, an error, leaving — on one transport and protocol."""
    url = any_server.http_url + "/chatHub"
    for name, user in (("alice_desktop", "alice"), ("alice_phone", "alice"), ("bob", "bob")):
        _connect(node, name, url, transport, protocol, **_credentials(auth, live_users, user))

    node.invoke("alice_desktop", "AddToGroup", "lobby")
    node.invoke("bob", "AddToGroup", "lobby")
    node.invoke("bob", "SendMessageToGroup", "lobby", "hi all")
    node.wait_for("alice_desktop", lambda ev: ["bob: hi all"] in received(ev, "Send"))
    assert received(node.collect("alice_desktop"), "Send") == [
        ["alice has joined the group lobby."],
        ["bob has joined the group lobby."],
        ["bob: hi all"],
    ]
    node.invoke("alice_phone", "RemoveFromGroup", "nobody is in this group")
    assert received(node.collect("alice_phone"), "Send") == []

    node.invoke("bob", "SendPrivateMessage", "alice", "psst")
    for device in ("alice_desktop", "alice_phone"):
        node.wait_for(device, lambda ev: received(ev, "ReceiveMessage") == [["bob: psst"]])
    node.invoke("bob", "RemoveFromGroup", "nobody is in this group")
    assert received(node.collect("bob"), "ReceiveMessage") == []

    with pytest.raises(InvocationError, match="Unknown hub method"):
        node.invoke("bob", "NoSuchMethod")

    node.invoke("alice_desktop", "RemoveFromGroup", "lobby")
    node.wait_for("bob", lambda ev: ["alice has left the group lobby."] in received(ev, "Send"))
    node.invoke("bob", "SendMessageToGroup", "lobby", "anyone?")
    node.wait_for("bob", lambda ev: ["bob: anyone?"] in received(ev, "Send"))
    node.invoke("alice_desktop", "RemoveFromGroup", "nobody is in this group")
    assert ["bob: anyone?"] not in received(node.collect("alice_desktop"), "Send")
    for name in ("alice_desktop", "alice_phone", "bob"):
        node.stop(name)
        node.wait_for(name, lambda ev: any(e["target"] == "__closed__" for e in ev))
        closed = [e for e in node.collect(name) if e["target"] == "__closed__"]
        assert closed[-1]["args"] == [None], closed  # a clean stop, no error


def test_messagepack_over_sse_is_refused(live_server_process, live_users, node):
    """Negotiate lists Server-Sent Events as Text only, so the client does not try MessagePack over it.

    (The server's own refusal, for a client that tries anyway, is in test_http_transports.py.)
    """
    url = live_server_process.http_url + "/chatHub"
    reply = node.call(
        "connect",
        name="m",
        url=url,
        headers={"Cookie": live_users["alice"]},
        events=[],
        transport="ServerSentEvents",
        protocol="messagepack",
    )
    assert not reply["ok"]
    assert "'ServerSentEvents' does not support Binary" in reply["error"], reply


HTTP_PAIRS = [("ServerSentEvents", "json"), ("LongPolling", "json"), ("LongPolling", "messagepack")]


@pytest.mark.parametrize(("transport", "protocol"), HTTP_PAIRS, ids=[f"{t}-{p}" for t, p in HTTP_PAIRS])
def test_revocation_and_disconnect_everywhere_on_http_transports(any_server, live_users, node, transport, protocol):
    """A grant revoked in the database ends alice's membership at once; "disconnect everywhere" closes her
    connections with the reason — on Server-Sent Events and long polling as on WebSockets."""
    alice = get_user_model().objects.get(username="alice")
    grant = GroupGrant.objects.create(hub="interop", group="secret", user=alice)
    url = any_server.http_url + "/interop"
    for name in ("a", "b"):
        reply = node.call(
            "connect",
            name=name,
            url=url,
            headers={"Cookie": live_users["alice" if name == "a" else "bob"]},
            events=["Receive", "GroupAccessRevoked"],
            transport=transport,
            protocol=protocol,
        )
        assert reply["ok"], reply
        node.events[name] = []
    assert node.invoke("a", "JoinGroup", "secret") is True
    assert node.invoke("a", "JoinGroup", "open room") is True
    assert node.invoke("b", "JoinGroup", "open room") is True

    started = time.monotonic()
    assert any_server.post_json("/test/grant", {"action": "revoke", "grant": grant.pk}) == {"ok": True}
    node.wait_for("a", lambda ev: received(ev, "GroupAccessRevoked") == [["secret", "revoked"]], 2.0)
    assert time.monotonic() - started < 2.0
    node.invoke("a", "SendToGroup", "secret", "after")
    node.invoke("a", "SendToGroup", "open room", "still open")
    node.wait_for("a", lambda ev: ["group", "still open"] in received(ev))
    assert ["group", "after"] not in received(node.events["a"])

    started = time.monotonic()
    assert any_server.post_json("/test/account", {"username": "alice", "action": "disconnect"}) == {"ok": True}
    events = node.wait_for("a", lambda ev: any(e["target"] == "__closed__" for e in ev), 3.0)
    closed = [e["args"][0] for e in events if e["target"] == "__closed__"]
    assert closed == ["Server returned an error on close: Disconnected by an administrator."]
    assert time.monotonic() - started < 3.0
    assert node.invoke("b", "GetUserIdentifier") == "bob"  # bob is untouched


@pytest.mark.parametrize(("transport", "protocol"), PAIRS, ids=[f"{t}-{p}" for t, p in PAIRS])
def test_streams_both_ways(any_server, live_users, node, transport, protocol):
    """stream() a counter to the end and cancel another midway (the generator's finally ran, no item after
    the cancel); upload 1,000 items through a Subject, summed by the hub."""
    url = any_server.http_url + "/interop"
    _connect(node, "s", url, transport, protocol, cookie=live_users["alice"])
    whole = node.call("stream", name="s", method="Counter", args=[5, 0])
    assert whole["ok"] and whole["completed"] and whole["error"] is None, whole
    assert whole["items"] == [0, 1, 2, 3, 4]

    cancelled = node.call("stream", name="s", method="Counter", args=[1000, 0.02], cancelAfter=3, settle=400)
    assert cancelled["ok"] and cancelled["cancelledAt"] == 3, cancelled
    assert cancelled["items"] == [0, 1, 2], "an item arrived after the cancel"
    deadline = time.monotonic() + 5
    while node.invoke("s", "StreamsFinished") < 2:  # both generators ran their finally
        assert time.monotonic() < deadline, "the cancelled generator's finally did not run"
        time.sleep(0.05)

    uploaded = node.call("upload", name="s", method="SumStream", items=list(range(1000)))
    assert uploaded["ok"] and uploaded["result"] == sum(range(1000)), uploaded

    failing = node.call("stream", name="s", method="FailingStream", args=[2, True])
    assert failing["items"] == [0, 1]
    assert failing["error"] == (
        "An error occurred on the server while streaming results. HubException: the stream broke"
    ), failing


@pytest.mark.parametrize(("transport", "protocol"), PAIRS, ids=[f"{t}-{p}" for t, p in PAIRS])
def test_client_results_from_the_caller(any_server, live_users, node, transport, protocol):
    """connection.on("GetMessage", () => value) answers a hub method's clients.caller.invoke(); a throwing
    handler is a ClientResultError, a silent one a timeout."""
    url = any_server.http_url + "/interop"
    results = {"GetMessage": {"value": {"text": "x", "n": 1}}, "Boom": {"throw": "boom"}, "Hang": {"hang": True}}
    _connect(node, "c", url, transport, protocol, cookie=live_users["alice"], results=results)
    assert node.invoke("c", "AskCaller", "GetMessage", 5) == {"result": {"text": "x", "n": 1}}
    thrown = node.invoke("c", "AskCaller", "Boom", 5)
    assert thrown["error"] == "ClientResultError" and "boom" in thrown["message"], thrown
    assert node.invoke("c", "AskCaller", "Hang", 0.3)["error"] == "ClientResultTimeoutError"
    assert node.invoke("c", "Echo", "still connected") == "still connected"
