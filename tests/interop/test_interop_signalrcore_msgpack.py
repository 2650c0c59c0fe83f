"""Interop with signalrcore speaking the MessagePack hub protocol (``.with_hub_protocol(MessagePackHubProtocol())``).

Over WebSockets the ordinary flow works: invocations with results, every MessagePack value type, group and
user sends from other connections (JSON ones included), error Completions, a server-initiated close.

Two things do not, both signalrcore bugs (the server follows ``HubProtocol.md``, "MessagePack (MsgPack)
encoding"; see the tests at the end):

* client-to-server streaming (``Subject``): ``MessagePackHubProtocol._encode_message`` builds each array from
  the attributes the message object happens to have, so ``InvocationClientStreamMessage`` (no
  ``invocation_id`` attribute) is written ``[1, Headers, Target, [Arguments], [StreamIds]]`` instead of
  ``[1, Headers, InvocationId|nil, Target, [Arguments], [StreamIds]]``, and ``CompletionClientStreamMessage``
  ``[3, Headers, InvocationId]`` without its ``ResultKind``;
* the long polling transport never carries MessagePack: it always picks its text client, and splits the
  poll bodies on the JSON record separator 0x1E.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack
import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.messages.completion_message import CompletionClientStreamMessage
from signalrcore.messages.invocation_message import InvocationClientStreamMessage, InvocationMessage
from signalrcore.messages.stream_item_message import StreamItemMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.subject import Subject
from signalrcore.transport.long_polling.long_polling_client import LongPollingBinaryClient, LongPollingTextClient
from signalrcore.transport.long_polling.long_polling_transport import LongPollingTransport
from signalrcore.types import HttpTransportType, HubProtocolEncoding

from signalr_groups.exceptions import ProtocolError
from signalr_groups.protocol import messagepack as server_msgpack
from signalr_groups.protocol.messages import CompletionMessage
from signalr_groups.protocol.messages import InvocationMessage as ServerInvocation

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0


class Client:
    """A started signalrcore connection: queues for results, ``Receive`` events and the raw frames."""

    def __init__(self, url: str, protocol: Any, **options: Any) -> None:
        builder = HubConnectionBuilder().with_url(url, options=options)
        self.connection = builder.with_hub_protocol(protocol).build()
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.replies: queue.Queue[Any] = queue.Queue()
        self.closed = threading.Event()
        self.sent: list[str | bytes] = []
        self.received: list[str | bytes] = []
        opened = threading.Event()
        self.connection.on_open(opened.set)
        self.connection.on_close(self.closed.set)
        self.connection.on("Receive", self.events.put)
        self.connection.on_error(self.replies.put)  # signalrcore reports Completion errors here
        if not isinstance(protocol, HubProtocolEncoding):  # a protocol object: record from the handshake on
            self._record(protocol)
        assert self.connection.start()
        assert opened.wait(WAIT), "signalrcore did not connect"

    def _record(self, protocol: Any) -> None:
        """Keep what the protocol object encodes and parses (instance attributes: signalrcore checks
        ``type(protocol) is MessagePackHubProtocol``, so a subclass would silently switch to text frames)."""
        encode, parse, handshake = protocol.encode, protocol.parse_messages, protocol.decode_handshake

        def recording_encode(message: Any) -> Any:
            frame = encode(message)
            self.sent.append(frame)
            return frame

        def recording_parse(raw: Any) -> Any:
            self.received.append(raw)
            return parse(raw)

        def recording_handshake(raw: Any) -> Any:
            self.received.append(raw)
            return handshake(raw)

        protocol.encode, protocol.parse_messages, protocol.decode_handshake = (
            recording_encode,
            recording_parse,
            recording_handshake,
        )

    def completion(self, method: str, *args: Any) -> Any:
        self.connection.send(method, list(args), on_invocation=self.replies.put)
        return self.replies.get(timeout=WAIT)

    def invoke(self, method: str, *args: Any) -> Any:
        message = self.completion(method, *args)
        if message.error:
            raise RuntimeError(message.error)
        return message.result

    def stop(self) -> None:
        # As in test_interop_signalrcore: have the server close first, so the reader thread wakes up.
        if not self.closed.is_set():
            self.connection.send("AbortMe", [])
        self.connection.stop()


@pytest.fixture
def clients(live_server_process) -> Iterator[Any]:
    started: list[Client] = []

    def connect(protocol: Any = None, cookie: str | None = None, **options: Any) -> Client:
        if cookie:
            options["headers"] = {"Cookie": cookie}
        client = Client(
            live_server_process.http_url + "/interop",
            MessagePackHubProtocol() if protocol is None else protocol,
            **options,
        )
        started.append(client)
        return client

    yield connect
    for client in started:
        client.stop()


def _bodies(frames: Sequence[str | bytes]) -> list[list[Any]]:
    """Split VarInt-prefixed MessagePack frames and decode each body."""
    messages: list[list[Any]] = []
    for frame in frames:
        assert isinstance(frame, bytes), f"not a binary frame: {frame!r}"
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


def _body(frame: bytes) -> bytes:
    """The body of a single-message frame (one-byte VarInt prefix)."""
    assert frame[0] == len(frame) - 1
    return frame[1:]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- what works


def test_invoke_results_and_value_types(live_server_process, live_users, clients):
    alice = clients(cookie=live_users["alice"])
    # The handshake is JSON (json.dumps spacing) sent in a binary frame; then MessagePack both ways.
    assert alice.sent[0] == '{"protocol": "messagepack", "version": 1}\x1e'
    assert alice.received[0] in (b"{}\x1e", "{}\x1e")
    assert alice.invoke("GetUserIdentifier") == "alice"
    assert alice.invoke("Add", 2, 3) == 5
    values: list[Any] = [
        0,
        -33,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        math.inf,
        "",
        "é☕𝄞",
        "x" * 300,
        [1, "two", 3.0, None, True, [False]],
        {"nested": {"list": [1, 2.5, None, "é"], "flag": False}, "empty": {}},
        None,
        True,
        b"\x00\x1e\xff",
    ]
    for value in values:
        echoed = alice.invoke("Echo", value)
        assert echoed == value and type(echoed) is type(value), f"{value!r} came back as {echoed!r}"
    assert alice.invoke("Echo", values) == values
    assert math.isnan(alice.invoke("Echo", math.nan))
    # Timestamps: the server turns the extension into a datetime and writes that datetime back.
    for timestamp in (msgpack.Timestamp(1_700_000_000, 250_000_000), msgpack.Timestamp(-2, 500_000_000)):
        echoed = alice.invoke("Echo", timestamp)
        assert isinstance(echoed, msgpack.Timestamp) and echoed == timestamp
    assert alice.invoke("Nothing") is None
    # Every frame after the handshake answer is binary: [3, {}, id, 3, result] for each call.
    completions = [m for m in _bodies(alice.received[1:]) if m[0] == 3]
    assert completions[0][3:] == [3, "alice"] and completions[1][3:] == [3, 5]
    assert not any(isinstance(frame, str) for frame in alice.sent[1:])


def test_group_and_user_messages_reach_msgpack_and_json_clients(live_server_process, live_users, clients):
    group = unique("café ☕")
    member = clients(cookie=live_users["bob"])
    json_member = clients(JsonHubProtocol(), cookie=live_users["carol"])
    outsider = clients()
    assert member.invoke("JoinGroup", group) is True
    assert json_member.invoke("JoinGroup", group) is True

    outsider.invoke("SendToGroup", group, "bonjour")
    assert member.events.get(timeout=WAIT) == ["group", "bonjour"]
    assert json_member.events.get(timeout=WAIT) == ["group", "bonjour"]
    json_member.invoke("SendToUser", "bob", "psst")
    assert member.events.get(timeout=WAIT) == ["user", "psst"]
    outsider.invoke("SendToCaller", "marker")
    assert outsider.events.get(timeout=WAIT) == ["caller", "marker"]
    assert outsider.events.empty() and member.events.empty() and json_member.events.empty()

    invocations = [m for m in _bodies(member.received[1:]) if m[0] == 1]
    assert invocations == [
        [1, {}, None, "Receive", ["group", "bonjour"], []],
        [1, {}, None, "Receive", ["user", "psst"], []],
    ]


def test_error_completions_and_the_connection_survives(live_server_process, clients):
    client = clients()
    failed = client.completion("Fail", "nope, not today")
    assert failed.result is None
    assert failed.error == "An unexpected error occurred invoking 'Fail' on the server. HubException: nope, not today"
    assert client.completion("Nope").error == "Unknown hub method 'Nope'"
    assert client.completion("Add", 1).error == "Failed to invoke 'Add' due to an error on the server."
    assert client.completion("Crash").error == "An unexpected error occurred invoking 'Crash' on the server."
    errors = [m for m in _bodies(client.received[1:]) if m[0] == 3 and m[3] == 1]
    assert len(errors) == 4 and all(len(m) == 5 and isinstance(m[4], str) for m in errors)
    assert client.invoke("Add", 2, 3) == 5


def test_server_close_then_stop(live_server_process, clients):
    """A Close from the server ([7, ...]) closes signalrcore's transport; stop() then returns at once."""
    client = clients()
    connection_id = client.invoke("GetConnectionId")
    client.connection.send("AbortMe", [])
    assert client.closed.wait(WAIT), "signalrcore did not report the close"
    closes = [m for m in _bodies(client.received[1:]) if m[0] == 7]
    assert len(closes) == 1
    started = time.monotonic()
    client.connection.stop()
    assert time.monotonic() - started < 1.0
    reply = live_server_process.post_json(
        "/ctx/group", {"action": "add", "connection_id": connection_id, "group": unique("probe")}
    )
    assert reply == {"ok": False}  # the server forgot the connection


def test_binary_encoding_preference_sends_handshake_version_0(live_server_process, clients):
    """``with_hub_protocol(HubProtocolEncoding.binary)`` builds ``MessagePackHubProtocol(version=negotiate_version)``:
    with negotiate v0 it asks for MessagePack *version 0*. .NET accepts versions up to its own, and so do we."""
    client = clients(HubProtocolEncoding.binary)
    protocol = client.connection.protocol
    assert type(protocol) is MessagePackHubProtocol
    assert protocol.encode(protocol.handshake_message()) == '{"protocol": "messagepack", "version": 0}\x1e'
    assert client.invoke("Echo", [1, b"\x02"]) == [1, b"\x02"]


# --------------------------------------------------------------------------- signalrcore bugs, documented


def test_client_stream_messages_are_misencoded(live_server_process, clients):
    """signalrcore bug: client-to-server streaming (``Subject``) writes arrays that HubProtocol.md does not allow.

    ``MessagePackHubProtocol._encode_message`` appends, in ``_priority`` order, only the attributes the message
    object has. ``InvocationClientStreamMessage`` has no ``invocation_id`` and ``CompletionClientStreamMessage``
    no ``result_kind``, so the positional arrays lose a slot. HubProtocol.md, "MessagePack (MsgPack) encoding":
    ``Invocation`` is ``[1, Headers, InvocationId, Target, [Arguments], [StreamIds]]`` ("InvocationId - One of:
    a Nil ... OR a String"), ``Completion`` is ``[3, Headers, InvocationId, ResultKind, Result?]``. The JSON
    protocol names its fields, so the same Subject works there.
    """
    protocol = MessagePackHubProtocol()
    stream_id = "s1"
    invocation = msgpack.unpackb(_body(protocol.encode(InvocationClientStreamMessage([stream_id], "Upload", []))))
    assert invocation == [1, {}, "Upload", [], [stream_id]]  # the spec: [1, {}, None, "Upload", [], ["s1"]]
    item = msgpack.unpackb(_body(protocol.encode(StreamItemMessage(stream_id, 42))))
    assert item == [2, {}, stream_id, 42]  # correct
    completion = msgpack.unpackb(_body(protocol.encode(CompletionClientStreamMessage(stream_id))))
    assert completion == [3, {}, stream_id]  # the spec: [3, {}, "s1", 2] (void result)
    # An ordinary invocation has the InvocationId slot (it lacks the optional StreamIds, which is fine).
    plain = msgpack.unpackb(_body(protocol.encode(InvocationMessage("7", "Echo", [1]))))
    assert plain == [1, {}, "7", "Echo", [1]]

    # The server's parser reads these positionally, as .NET does: the target slot holds the arguments.
    with pytest.raises(ProtocolError, match="Property 'target' has the wrong type."):
        server_msgpack.parse_message(msgpack.packb(invocation))
    with pytest.raises(ProtocolError, match="Missing required property 'resultKind'."):
        server_msgpack.parse_message(msgpack.packb(completion))
    spec_invocation = server_msgpack.parse_message(msgpack.packb([1, {}, None, "Upload", [], [stream_id]]))
    assert isinstance(spec_invocation, ServerInvocation) and spec_invocation.stream_ids == [stream_id]
    spec_completion = server_msgpack.parse_message(msgpack.packb([3, {}, stream_id, 2]))
    assert isinstance(spec_completion, CompletionMessage) and spec_completion.invocation_id == stream_id

    # Live: the client-stream invocation closes the MessagePack connection with that protocol error...
    client = clients()
    client.connection.send("Echo", Subject())  # sends the InvocationClientStreamMessage
    assert client.closed.wait(WAIT), "the server did not close the connection"
    assert _bodies(client.sent[-1:])[0][2:4] == ["Echo", []]
    closes = [m for m in _bodies(client.received[1:]) if m[0] == 7]
    assert closes == [
        [7, "Connection closed with an error. ProtocolError: Property 'target' has the wrong type.", True]
    ]

    # ...while over JSON the same calls are well-formed: the (unsupported) upload is dropped, the connection lives.
    json_client = clients(JsonHubProtocol())
    json_subject = Subject()
    json_client.connection.send("Echo", json_subject)
    json_subject.next("item")
    json_subject.complete()
    assert json.loads(json_client.sent[1].rstrip("\x1e"))["streamIds"] == [json_subject.invocation_id]
    assert json_client.invoke("Echo", "still alive") == "still alive"


def test_long_polling_transport_cannot_carry_msgpack():
    """signalrcore bugs: its long polling transport is text-only whatever the protocol.

    * ``BaseHubConnection.start()`` never passes ``is_binary`` to the transport (``BaseTransport`` defaults it
      to False), so ``LongPollingTransport`` always picks ``LongPollingTextClient``;
    * ``LongPollingBinaryClient.__init__`` calls ``super(LongPollingTextClient, self)``, a TypeError;
    * ``LongPollingBaseClient._append`` cuts poll bodies at the first 0x1E (JSON's record separator), which
      MessagePack frames are not made of: a body without that byte is held back for ever, one with it (the
      integer 30, say) is cut in two;
    * the text client then decodes the bytes as UTF-8 (``prepare_data``): a MessagePack message is an array,
      whose first byte 0x90-0x9F (or 0xDC/0xDD) is never valid UTF-8 after a one-byte length prefix, so this
      raises UnicodeDecodeError and ends the client's receive loop; and were it text,
      ``MessagePackHubProtocol.parse_messages`` could not index a ``str`` (``raw[offset] & 0x7F``): it logs
      the TypeError and returns no message.
    """
    transport = LongPollingTransport(url="http://127.0.0.1:1/interop", protocol=MessagePackHubProtocol())
    assert transport.is_binary is False and transport._client_cls is LongPollingTextClient
    with pytest.raises(TypeError):
        LongPollingBinaryClient(url="http://127.0.0.1:1/interop")

    delivered: list[Any] = []
    client = LongPollingTextClient(
        url="http://127.0.0.1:1/interop", on_message=lambda _app, data: delivered.append(data)
    )
    # What this server answers a poll with: MessagePack frames, as its writer makes them.
    body = server_msgpack.write_completion("1", result=5, has_result=True)
    assert b"\x1e" not in body
    assert client._append(body) is None  # held back: no 0x1E, no message
    cut = server_msgpack.write_completion("2", result=30, has_result=True)  # 30 == 0x1E
    assert client._append(cut) == body + cut[: cut.index(b"\x1e")]  # released, cut before the result
    frame = server_msgpack.write_completion("3", result="x", has_result=True)
    with pytest.raises(UnicodeDecodeError):
        client.prepare_data(frame)  # in run(): on_error, and the receive loop ends
    assert MessagePackHubProtocol().parse_messages(frame.decode("latin-1")) == []  # a str: nothing parsed
    assert len(MessagePackHubProtocol().parse_messages(frame)) == 1  # the bytes themselves are fine


def test_json_over_long_polling_posts_its_handshake_before_the_first_poll(live_server_process, clients):
    """signalrcore's long polling sends its handshake before its first GET. As on ASP.NET Core (whose
    connection exists from negotiate on), that POST starts the connection: JSON over long polling works."""
    client = clients(JsonHubProtocol(), transport=HttpTransportType.long_polling)
    assert client.invoke("Echo", "over long polling") == "over long polling"
    assert client.invoke("GetConnectionId")
    log = live_server_process.log_path.read_text()
    assert "GET /interop?id=" in log and "POST /interop?id=" in log
