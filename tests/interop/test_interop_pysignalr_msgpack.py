"""Interop with the real pysignalr client speaking the MessagePack hub protocol over WebSockets.

pysignalr selects MessagePack with ``SignalRClient(url, protocol=MessagepackProtocol())``: it sends the JSON
handshake ``{"protocol":"messagepack","version":1}`` in a binary frame, then VarInt-prefixed MessagePack
arrays. It decodes with ``msgpack.unpackb`` defaults, so a timestamp extension arrives as a
``msgpack.Timestamp`` and ``bin`` as ``bytes``.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest
from django.conf import settings
from pysignalr.messages import HandshakeRequestMessage, Message
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from tests.interop.test_interop_pysignalr import PyClient
from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 5.0


class RecordingMessagepackProtocol(MessagepackProtocol):
    """pysignalr's MessagePack protocol, keeping every raw frame sent and received (to check the wire)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.received: list[str | bytes] = []

    def encode(self, message: Message | HandshakeRequestMessage) -> bytes:
        frame = super().encode(message)
        self.sent.append(frame)
        return frame

    def decode(self, raw_message: str | bytes) -> list[Message]:
        self.received.append(raw_message)
        return super().decode(raw_message)

    def decode_handshake(self, raw_message: str | bytes) -> Any:
        self.received.append(raw_message)
        return super().decode_handshake(raw_message)


class MsgpackClient(PyClient):
    """One pysignalr connection (MessagePack, or JSON for mixed-protocol checks) run as a background task."""

    protocol: Any

    def __init__(self, url: str, *, cookie: str | None = None, json: bool = False) -> None:
        super().__init__(url, cookie=cookie, protocol=JSONProtocol() if json else RecordingMessagepackProtocol())


def _connector(server: ServerProcess, started: list[MsgpackClient]) -> Callable[..., Any]:
    async def connect(
        *, cookie: str | None = None, json: bool = False, skip_negotiation: bool = False
    ) -> MsgpackClient:
        base = server.ws_url if skip_negotiation else server.http_url
        client = MsgpackClient(base + "/interop", cookie=cookie, json=json)
        if skip_negotiation:
            client.client._transport._skip_negotiation = True  # no public option (needs a ws:// URL)
        started.append(client)
        await client.start()
        return client

    return connect


@pytest.fixture
async def msgpack_clients(live_server_process) -> AsyncIterator[Callable[..., Any]]:
    """``await connect(cookie=..., json=..., skip_negotiation=...)`` against daphne; all stopped afterwards."""
    started: list[MsgpackClient] = []
    try:
        yield _connector(live_server_process, started)
    finally:
        for client in started:
            await client.stop()


@pytest.fixture(scope="module")
def uvicorn_process(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    log_path: Path = tmp_path_factory.mktemp("uvicorn-msgpack") / "uvicorn.log"
    server = ServerProcess(log_path, str(settings.DATABASES["default"]["NAME"]), server="uvicorn")
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _bodies(frames: Sequence[str | bytes]) -> list[list[Any]]:
    """Split VarInt-prefixed MessagePack frames and decode each body, independently of pysignalr."""
    messages: list[list[Any]] = []
    for frame in frames:
        assert isinstance(frame, bytes), f"a text frame arrived on a MessagePack connection: {frame!r}"
        pos = 0
        while pos < len(frame):
            length = shift = 0
            while True:
                byte = frame[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            messages.append(msgpack.unpackb(frame[pos : pos + length]))
            pos += length
    return messages


async def test_handshake_invoke_and_wire_format(live_server_process, live_users, msgpack_clients):
    client = await msgpack_clients(cookie=live_users["alice"])
    protocol = client.protocol
    assert isinstance(protocol, RecordingMessagepackProtocol)
    # The handshake request is JSON in a binary frame; the answer is the JSON "{}" record. (ASP.NET Core sends
    # that answer in a binary frame once MessagePack is chosen; this server sends a text frame: both are read.)
    assert protocol.sent[0] == b'{"protocol":"messagepack","version":1}\x1e'
    assert protocol.received[0] in ("{}\x1e", b"{}\x1e")
    # pysignalr negotiated v0 and connected with its connectionId.
    assert parse_qs(urlsplit(client.transport_url).query)["id"] == [client.connection_id]

    assert await client.call("GetUserIdentifier") == "alice"
    assert await client.call("Add", 2, 3) == 5
    assert await client.call("Echo", "héllo") == "héllo"
    nothing = await client.invoke("Nothing")
    assert (nothing.result, nothing.error) == (None, None)

    # Every later frame is binary MessagePack: Completions are [3, {}, id, kind, result?].
    completions = [m for m in _bodies(protocol.received[1:]) if m[0] == 3]
    # A method returning None still has a result (kind 3, nil): Python cannot tell "void" from "returns None".
    assert [m[3:] for m in completions] == [[3, client.connection_id], [3, "alice"], [3, 5], [3, "héllo"], [3, None]]
    assert all(m[1] == {} and isinstance(m[2], str) for m in completions)
    # pysignalr writes its invocations [1, headers, id, target, args, []], with its HTTP headers (the session
    # cookie too) as the message headers: the server accepts any string-to-string map there.
    invocations = _bodies(protocol.sent[1:])
    assert invocations[0][0] == 1 and invocations[0][3] == "GetConnectionId" and invocations[0][4:] == [[], []]
    assert invocations[0][1] == {"Cookie": live_users["alice"]}
    assert client.errors == []


async def test_values_of_every_kind_round_trip(live_server_process, live_users, msgpack_clients):
    client = await msgpack_clients()
    values: list[Any] = [
        0,
        -1,
        127,
        -33,
        255,
        65_536,
        2**63 - 1,
        -(2**63),
        2**64 - 1,  # uint64: what MessagePack carries and Python keeps exactly
        1.5,
        -0.0,
        1e308,
        math.inf,
        -math.inf,
        "",
        "é☕𝄞",
        "x" * 300,  # str16
        [],
        [1, "two", 3.0, None, True, [False]],
        {},
        {"nested": {"list": [1, 2.5, None, "é"], "flag": False}, "empty": {}},
        None,
        True,
        False,
        b"\x00\xffbytes",  # bin8 stays bytes
    ]
    for value in values:
        echoed = await client.call("Echo", value)
        assert echoed == value and type(echoed) is type(value), f"{value!r} came back as {echoed!r}"
    assert math.copysign(1.0, await client.call("Echo", -0.0)) == -1.0
    assert math.isnan(await client.call("Echo", math.nan))
    # All arguments at once, in one message, keep their order and types.
    assert await client.call("Echo", values) == values
    assert await client.call("SyncEcho", {"k": [1, None]}) == {"value": {"k": [1, None]}, "main_thread": False}
    assert client.errors == []


async def test_timestamps_come_back_as_timestamp_extensions(live_server_process, live_users, msgpack_clients):
    """The server reads a timestamp extension as a datetime and writes that datetime back as a timestamp.

    pysignalr cannot send a ``datetime`` (its ``msgpack.packb`` has ``datetime=False``), but it sends
    ``msgpack.Timestamp`` values as the extension type -1, and decodes what the server writes into the same.
    """
    client = await msgpack_clients()
    cases = [  # each with the extension header the server must write: type -1 (0xff) in 4, 8 or 12 bytes
        (msgpack.Timestamp(0, 0), b"\xd6\xff"),  # timestamp32 (fixext4)
        (msgpack.Timestamp(1_700_000_000, 0), b"\xd6\xff"),
        (msgpack.Timestamp(1_700_000_000, 250_000_000), b"\xd7\xff"),  # timestamp64 (fixext8)
        (msgpack.Timestamp(-2, 500_000_000), b"\xc7\x0c\xff"),  # timestamp96 (ext8): 1969-12-31T23:59:58.5Z
        (msgpack.Timestamp(253_402_300_799, 999_999_000), b"\xc7\x0c\xff"),  # 9999-12-31T23:59:59.999999Z
    ]
    for timestamp, header in cases:
        echoed = await client.call("Echo", timestamp)
        assert isinstance(echoed, msgpack.Timestamp), f"{timestamp!r} came back as {echoed!r}"
        assert echoed == timestamp
        frame = client.protocol.received[-1]
        assert header + timestamp.to_bytes() in frame, f"{timestamp!r} was written as {frame!r}"
    echoed = await client.call("Echo", {"at": msgpack.Timestamp(-2, 500_000_000)})
    assert echoed["at"].to_datetime().isoformat() == "1969-12-31T23:59:58.500000+00:00"
    # Python datetimes hold microseconds: nanoseconds below that are dropped, not rounded.
    assert await client.call("Echo", msgpack.Timestamp(1, 123_456_789)) == msgpack.Timestamp(1, 123_456_000)


async def test_datetimes_made_on_the_server_are_timestamp_extensions(live_server_process, live_users, msgpack_clients):
    """A hub's aware datetime goes out as the timestamp extension (the same instant, in UTC), a naive one is
    read as UTC; dates and decimals are strings, as in JSON (Django's encoder)."""
    client = await msgpack_clients()
    times = await client.call("ServerTimes")
    assert isinstance(times["aware"], msgpack.Timestamp) and isinstance(times["naive"], msgpack.Timestamp)
    assert times["aware"].to_datetime().isoformat() == "2026-12-01T08:30:15.250000+00:00"
    assert times["naive"] == times["aware"]
    assert times["date"] == "2026-12-01" and times["decimal"] == "1.10"


async def test_group_and_user_messages_between_connections(live_server_process, live_users, msgpack_clients):
    group = unique("mp-room")
    sender = await msgpack_clients(cookie=live_users["alice"])
    member = await msgpack_clients(cookie=live_users["bob"])
    outsider = await msgpack_clients(cookie=live_users["carol"])
    assert await member.call("JoinGroup", group) is True

    await sender.call("SendToGroup", group, "hello group")
    assert await member.wait_for(lambda events: bool(events)) == [["group", "hello group"]]
    await sender.call("SendToUser", "bob", "for bob")
    assert await member.wait_for(lambda events: len(events) == 2) == [["group", "hello group"], ["user", "for bob"]]
    assert await outsider.barrier() == []
    assert await sender.barrier() == []

    # Server-sent Invocations are [1, {}, nil, "Receive", [kind, message], []] (non-blocking, empty StreamIds).
    invocations = [m for m in _bodies(member.protocol.received[1:]) if m[0] == 1]
    assert invocations[:2] == [
        [1, {}, None, "Receive", ["group", "hello group"], []],
        [1, {}, None, "Receive", ["user", "for bob"], []],
    ]

    # A plain view sending through the hub context reaches the MessagePack member too.
    reply = await asyncio.to_thread(
        live_server_process.post_json, "/ctx/send", {"kind": "group", "name": group, "message": "from a view"}
    )
    assert reply == {"ok": True}
    assert await member.wait_for(lambda events: len(events) == 3) == [
        ["group", "hello group"],
        ["user", "for bob"],
        ["ctx-group", "from a view"],
    ]


async def test_json_and_msgpack_connections_share_groups(live_server_process, live_users, msgpack_clients):
    """One group send is written once per protocol: JSON and MessagePack members each get their own encoding."""
    group = unique("mixed")
    json_client = await msgpack_clients(cookie=live_users["alice"], json=True)
    binary_client = await msgpack_clients(cookie=live_users["bob"])
    for client in (json_client, binary_client):
        assert await client.call("JoinGroup", group) is True
    payload = "é☕ " + "x" * 200
    await json_client.call("SendToGroup", group, payload)
    await binary_client.call("SendToGroup", group, "from msgpack")
    for client in (json_client, binary_client):
        await client.wait_for(lambda events: len(events) == 2)
        assert client.received == [["group", payload], ["group", "from msgpack"]]
    await json_client.call("SendToUsers", ["alice", "bob"], "both")
    for client in (json_client, binary_client):
        await client.wait_for(lambda events: len(events) == 3)
        assert client.received[2] == ["users", "both"]


async def test_errors_arrive_as_completions_and_the_connection_survives(
    live_server_process, live_users, msgpack_clients
):
    client = await msgpack_clients()

    failed = await client.invoke("Fail", "nope, not today")
    assert failed.result is None
    assert failed.error == "An unexpected error occurred invoking 'Fail' on the server. HubException: nope, not today"
    unknown = await client.invoke("Nope")
    assert unknown.error == "Unknown hub method 'Nope'"
    wrong_count = await client.invoke("Add", 1)
    assert wrong_count.error == "Failed to invoke 'Add' due to an error on the server."
    crashed = await client.invoke("Crash")
    assert crashed.error == "An unexpected error occurred invoking 'Crash' on the server."
    unserializable = await client.invoke("Unserializable")
    assert unserializable.result is None
    assert unserializable.error == "The hub method's result could not be serialized."

    assert [message.error for message in client.errors] == [
        failed.error,
        unknown.error,
        wrong_count.error,
        crashed.error,
        unserializable.error,
    ]
    # On the wire: [3, {}, id, 1, error].
    errors = [m for m in _bodies(client.protocol.received[1:]) if m[0] == 3 and m[3] == 1]
    assert [m[4] for m in errors] == [message.error for message in client.errors]
    assert await client.call("Add", 2, 3) == 5


async def test_skip_negotiation_then_clean_stop(live_server_process, live_users, msgpack_clients):
    """Straight to the WebSocket (no negotiate), then a client-side stop: the server forgets the connection."""
    client = await msgpack_clients(skip_negotiation=True)
    assert "id" not in parse_qs(urlsplit(client.transport_url).query)
    assert isinstance(client.connection_id, str) and len(client.connection_id) == 22
    assert await client.call("Echo", [1, {"a": None}]) == [1, {"a": None}]
    group = unique("gone")
    assert await client.call("JoinGroup", group) is True

    connection_id = client.connection_id
    await client.stop()

    async def is_known() -> bool:
        body = {"action": "add", "connection_id": connection_id, "group": unique("probe")}
        reply = await asyncio.to_thread(live_server_process.post_json, "/ctx/group", body)
        return bool(reply["ok"])

    for _ in range(int(TIMEOUT / 0.05)):
        if not await is_known():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the server still knows {connection_id} {TIMEOUT}s after the client stopped")
    # The group send after the stop reaches nobody and fails nothing.
    other = await msgpack_clients()
    await other.call("SendToGroup", group, "anyone?")
    assert await other.barrier() == []


async def test_msgpack_under_uvicorn(uvicorn_process, live_users):
    started: list[MsgpackClient] = []
    connect = _connector(uvicorn_process, started)
    try:
        alice = await connect(cookie=live_users["alice"])
        bob = await connect(cookie=live_users["bob"], json=True)
        assert await alice.call("GetUserIdentifier") == "alice"
        assert await alice.call("Echo", {"n": [1, 2.5, None, True, b"\x01"]}) == {"n": [1, 2.5, None, True, b"\x01"]}
        assert await alice.call("Echo", msgpack.Timestamp(-2, 500_000_000)) == msgpack.Timestamp(-2, 500_000_000)
        assert await alice.call("JoinGroup", "uv-mp") is True
        await bob.call("SendToGroup", "uv-mp", "hello from uvicorn")
        await bob.call("SendToUser", "alice", "direct")
        assert await alice.wait_for(lambda events: len(events) == 2) == [
            ["group", "hello from uvicorn"],
            ["user", "direct"],
        ]
        failed = await alice.invoke("Fail", "under uvicorn")
        assert failed.error == "An unexpected error occurred invoking 'Fail' on the server. HubException: under uvicorn"
        assert isinstance(alice.protocol, RecordingMessagepackProtocol)
        assert all(isinstance(frame, bytes) for frame in alice.protocol.received[1:])  # after the handshake
    finally:
        for client in started:
            await client.stop()


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_server_to_client_streaming(live_server_process, live_users, msgpack_clients, protocol):
    """pysignalr's ``stream()``: the items of an async-generator hub method, then its Completion."""
    client = await msgpack_clients(cookie=live_users["alice"], json=protocol == "json")
    items: list[Any] = []
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def on_next(item: Any) -> None:
        items.append(item)

    async def on_complete(message: Any) -> None:
        if not done.done():
            done.set_result(message)

    await client.client.stream("Counter", [4, 0], on_next=on_next, on_complete=on_complete)
    completion = await asyncio.wait_for(done, TIMEOUT)
    assert getattr(completion, "error", None) is None
    assert items == [0, 1, 2, 3]
