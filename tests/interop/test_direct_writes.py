"""Direct frame writes under uvicorn (``server/uvicorn_socket.py``) and daphne (``server/flow.py``) and the sliced
fan-out, on real server processes.

Under uvicorn's websockets-sansio protocol a record for an idle socket is framed by us (once per send, shared by
every member) and written straight to the transport; a socket that is not writable, or that negotiated
permessage-deflate, takes the ASGI path instead. Under daphne the frame goes to the socket itself while Twisted's
write buffer is empty, and what the socket does not take (a ~900 KB frame) to Twisted's buffer behind it. These
tests check what clients see:

- payloads at the WebSocket frame-length boundaries (7-bit, 16-bit and 64-bit lengths) and about 900 KB, with
  multi-byte UTF-8, reach every member intact, in JSON and MessagePack, for raw ``websockets`` clients and the
  official client under Node;
- the same with permessage-deflate negotiated: every data frame is compressed (RSV1 set), so none went direct;
- with the fan-out forced to one event-loop turn per 32 recipients, a send to 300 members reaches its caller
  before the invocation's completion, and concurrent senders' numbered sends arrive in order everywhere, every
  member seeing them in the same order;
- a member that stops reading while its group is flooded is closed by its outbox bound; the others get everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import random
import re
import socket
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect

from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol import messagepack as messagepack_protocol
from tests.interop.test_hostile_clients import _closed_by_server, _stalled_member
from tests.live import NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(180)

RS = "\x1e"
PROTOCOLS = ("json", "messagepack")
#: Record sizes in bytes (the whole WebSocket payload of a record sent alone): the last 7-bit length, the first
#: 16-bit one, the last 16-bit one, the first 64-bit one, and a large one under uvicorn's 1 MiB frame limit.
SIZES = (125, 126, 65535, 65536, 900 * 1024)
#: One to four bytes each in UTF-8; nothing JSON escapes.
ALPHABET = "abcXYZ019 -é߯ж€中ツ😀🎉𝄞"
#: Settings of the servers of these tests: invocations large enough to carry the ~900 KB payload (the rest,
#: the outbox bound included, as by default).
LARGE_MESSAGES = {"MAX_MESSAGE_SIZE": 1024 * 1024}

Record = tuple[int, dict[str, Any]]  # (size in bytes, separator or length prefix included; the message)


# ---------------------------------------------------------------------- servers


def _uvicorn(
    directory: Path, *, server: str = "uvicorn", extra_env: dict[str, str] | None = None, **kwargs: Any
) -> ServerProcess:
    return ServerProcess(
        directory / "uvicorn.log", str(settings.DATABASES["default"]["NAME"]), server=server,
        extra_env={"SIGNALR_TEST_SETTINGS": json.dumps(LARGE_MESSAGES), **(extra_env or {})}, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["uvicorn", "uvicorn-lean", "daphne"])
def plain_server(request, django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """uvicorn as the README runs it (no permessage-deflate), with its own websockets-sansio protocol or the lean
    subclass (``signalr_groups.server.uvicorn_ws``), and daphne (whose direct writes send on the socket while
    Twisted's buffer is empty, the rest through it): every socket may take direct writes."""
    server = _uvicorn(tmp_path_factory.mktemp(request.param), server=request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deflate_server(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """uvicorn with its default permessage-deflate on: a socket that negotiates it must never take direct writes."""
    server = _uvicorn(tmp_path_factory.mktemp("uvicorn-deflate"), extra_args=["--ws-per-message-deflate", "true"])
    yield server
    server.stop()


#: Loaded by the server's interpreter at start-up (PYTHONPATH): every fan-out slice ends at its first look at
#: the clock (32 recipients), so a send to a few hundred members always spans several event-loop turns.
_SLICED_SITECUSTOMIZE = """\
import sys

import signalr_groups.lifetime.fanout as fanout

fanout.SLICE_SECONDS = 0.0
print("test_direct_writes: fan-out slices forced to 0 s", file=sys.stderr, flush=True)
"""


@pytest.fixture(scope="module")
def sliced_server(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("uvicorn-sliced")
    site = directory / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLICED_SITECUSTOMIZE)
    root = Path(__file__).resolve().parents[2]
    server = _uvicorn(directory, extra_env={"PYTHONPATH": f"{site}{os.pathsep}{root}"})
    try:
        assert "fan-out slices forced to 0 s" in server.log(), server.log()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------- payloads and records


def text_of(size: int, seed: int) -> str:
    """A string of exactly ``size`` bytes of UTF-8, mixing one- to four-byte characters."""
    rng = random.Random(seed)
    parts: list[str] = []
    used = 0
    while used < size:
        char = rng.choice(ALPHABET)
        width = len(char.encode())
        if used + width > size:
            char, width = "x", 1
        parts.append(char)
        used += width
    return "".join(parts)


def message_for(protocol: str, record_size: int, seed: int) -> str:
    """The message whose ``Receive("group", message)`` record, as the server writes it, is ``record_size`` bytes."""

    def size_with(length: int) -> int:
        text = "x" * length
        if protocol == "json":
            return len(json_protocol.write_invocation("Receive", ("group", text)).encode())
        return len(messagepack_protocol.write_invocation("Receive", ("group", text)))

    length = record_size - size_with(0)
    for _ in range(8):  # the length prefixes grow with the length: converge on the exact size
        length += record_size - size_with(length)
    assert size_with(length) == record_size, (protocol, record_size)
    message = text_of(length, seed)
    assert len(message.encode()) == length
    return message


def _varint(length: int) -> bytes:
    out = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def handshake(protocol: str) -> str:
    return json.dumps({"protocol": protocol, "version": 1}) + RS


def invocation(protocol: str, target: str, arguments: list[Any], invocation_id: str | None = None) -> str | bytes:
    if protocol == "json":
        message: dict[str, Any] = {"type": 1, "target": target, "arguments": arguments}
        if invocation_id is not None:
            message["invocationId"] = invocation_id
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")) + RS
    body = msgpack.packb([1, {}, invocation_id, target, arguments])
    return _varint(len(body)) + body


def parse(data: str | bytes) -> list[Record]:
    """The records of one frame: JSON text records, or length-prefixed MessagePack messages (as dicts)."""
    if isinstance(data, str):
        return [(len(part.encode()) + 1, json.loads(part)) for part in data.split(RS) if part]
    records: list[Record] = []
    position = 0
    while position < len(data):
        length = shift = 0
        start = position
        while True:
            byte = data[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        items = msgpack.unpackb(data[position : position + length])
        position += length
        kind = items[0]
        if kind == 1:
            message = {"type": 1, "invocationId": items[2], "target": items[3], "arguments": items[4]}
        elif kind == 3:
            message = {"type": 3, "invocationId": items[2], "resultKind": items[3], "rest": items[4:]}
        else:
            message = {"type": kind, "items": items}
        records.append((position - start, message))
    return records


def group_messages(records: list[Record], target: str = "Receive") -> list[Any]:
    return [message["arguments"][-1] for _size, message in records if message.get("target") == target]


def completion_ids(records: list[Record]) -> list[str]:
    return [message["invocationId"] for _size, message in records if message["type"] == 3]


def answered(invocation_id: str) -> Callable[[list[Record]], bool]:
    """Whether the records include the completion of ``invocation_id``."""
    return lambda records: invocation_id in completion_ids(records)


class Member:
    """A raw ``websockets`` client past the SignalR handshake, keeping every record it read."""

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.records: list[Record] = []

    @classmethod
    async def open(cls, server: ServerProcess, protocol: str = "json", **options: Any) -> Member:
        ws = await connect(server.ws_url + "/interop", max_size=None, max_queue=None, open_timeout=30, **options)
        await ws.send(handshake(protocol))
        answer = await asyncio.wait_for(ws.recv(), 15)
        assert answer == ("{}" + RS if protocol == "json" else b"{}" + RS.encode())
        return cls(ws, protocol)

    async def invoke(self, target: str, *arguments: Any, invocation_id: str | None = None) -> None:
        await self.ws.send(invocation(self.protocol, target, list(arguments), invocation_id))

    async def read_until(self, done: Callable[[list[Record]], bool], timeout: float = 30) -> list[Record]:
        async with asyncio.timeout(timeout):
            while not done(self.records):
                frame = await self.ws.recv()
                kind = "text" if isinstance(frame, str) else "binary"
                assert kind == ("text" if self.protocol == "json" else "binary"), f"a {kind} frame for {self.protocol}"
                self.records.extend(parse(frame))
        return self.records

    async def join(self, group: str, invocation_id: str = "join") -> None:
        await self.invoke("JoinGroup", group, invocation_id=invocation_id)
        await self.read_until(answered(invocation_id))


class RawDeflateMember:
    """A hand-written client that offers permessage-deflate and reports, per data frame, whether it was compressed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.inflater = zlib.decompressobj(-15)  # the server's context carries over between messages
        self.compressed: list[bool] = []
        self.records: list[Record] = []

    @classmethod
    async def open(cls, server: ServerProcess, protocol: str) -> RawDeflateMember:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=4 * 1024 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /interop HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).decode("latin-1").lower()
        assert head.startswith("http/1.1 101"), head
        assert "sec-websocket-extensions: permessage-deflate" in head, f"deflate was not negotiated:\n{head}"
        member = cls(reader, writer, protocol)
        member.send(handshake(protocol))
        answer = await member.frame()
        assert answer == b"{}" + RS.encode()
        return member

    def send(self, data: str | bytes) -> None:
        """One masked, uncompressed frame (RSV1 clear: allowed for any message under permessage-deflate)."""
        opcode, payload = (0x1, data.encode()) if isinstance(data, str) else (0x2, data)
        self._write(opcode, payload)

    def _write(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes((0x80 | opcode, 0x80 | length))
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def frame(self) -> bytes:
        """The next data message's payload, inflated if it was compressed (answering pings meanwhile)."""
        while True:
            first, second = await self.reader.readexactly(2)
            assert first & 0x80, "the server fragmented a message"
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self._write(0xA, payload)
                continue
            assert opcode == (0x1 if self.protocol == "json" else 0x2), f"unexpected opcode {opcode}"
            rsv1 = bool(first & 0x40)
            self.compressed.append(rsv1)
            return self.inflater.decompress(payload + b"\x00\x00\xff\xff") if rsv1 else payload

    async def read_until(self, done: Callable[[list[Record]], bool], timeout: float = 30) -> list[Record]:
        async with asyncio.timeout(timeout):
            while not done(self.records):
                payload = await self.frame()
                self.records.extend(parse(payload.decode() if self.protocol == "json" else payload))
        return self.records

    async def join(self, group: str) -> None:
        self.send(invocation(self.protocol, "JoinGroup", [group], "join"))
        await self.read_until(answered("join"))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


def _group() -> str:
    return f"direct-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------- (a)/(b) payloads at the frame boundaries


async def _boundary_payloads_reach_raw_members(server: ServerProcess, protocol: str, *, deflate: bool) -> None:
    """Four ``websockets`` members (they offer permessage-deflate, as websockets does by default) and, on a
    deflate server, a raw one that checks every frame; the first member sends."""
    group = _group()
    messages = [message_for(protocol, size, seed) for seed, size in enumerate(SIZES)]
    tail = [
        f"tail-{index}-€" for index in range(20)
    ]  # right behind the large one (queued while its socket is not writable)
    members = [await Member.open(server, protocol, compression="deflate") for _ in range(4)]
    deflating = await RawDeflateMember.open(server, protocol) if deflate else None
    try:
        for member in members:
            negotiated = member.ws.protocol.extensions
            assert bool(negotiated) == deflate, negotiated
            await member.join(group)
        if deflating is not None:
            await deflating.join(group)
        sender = members[0]  # a member too: it must see its own sends
        for index, message in enumerate([*messages, *tail]):
            await sender.invoke("SendToGroup", group, message, invocation_id=f"s{index}")
        expected = [*messages, *tail]
        readers: list[Member | RawDeflateMember] = [*members, *([deflating] if deflating else [])]
        for reader in readers:
            records = await reader.read_until(lambda records: len(group_messages(records)) >= len(expected))
            got = group_messages(records)
            assert len(got) == len(expected)
            for index, (text, want) in enumerate(zip(got, expected, strict=True)):
                assert text == want, f"message {index} ({len(want.encode())} bytes) differs"
            sizes = [size for size, message in records if message.get("target") == "Receive"][: len(SIZES)]
            assert sizes == list(SIZES), "records of exactly the boundary sizes"
        await sender.read_until(answered(f"s{len(expected) - 1}"))
        assert completion_ids(sender.records) == ["join", *(f"s{index}" for index in range(len(expected)))]
        if deflating is not None:
            assert deflating.compressed and all(deflating.compressed), (
                "a data frame reached a permessage-deflate socket uncompressed: it bypassed the extension"
            )
    finally:
        await asyncio.gather(*(member.ws.close() for member in members), return_exceptions=True)
        if deflating is not None:
            await deflating.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_boundary_payloads_reach_every_raw_member_intact(plain_server, protocol):
    """No extension negotiated (the clients offer deflate, the server declines): the direct-write path."""
    await _boundary_payloads_reach_raw_members(plain_server, protocol, deflate=False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_boundary_payloads_reach_every_raw_member_with_permessage_deflate(deflate_server, protocol):
    """Deflate negotiated: content intact, and every data frame compressed (the ASGI path, never a direct write)."""
    await _boundary_payloads_reach_raw_members(deflate_server, protocol, deflate=True)


async def test_a_member_without_deflate_next_to_members_with_it(deflate_server):
    """One send, members with and without the extension on one server: each gets its own kind of frame."""
    group = _group()
    message = message_for("json", 65536, seed=7)
    plain = await Member.open(deflate_server, compression=None)
    deflated = await Member.open(deflate_server, compression="deflate")
    raw = await RawDeflateMember.open(deflate_server, "json")
    try:
        assert not plain.ws.protocol.extensions and deflated.ws.protocol.extensions
        for member in (plain, deflated, raw):
            await member.join(group)
        await plain.invoke("SendToGroup", group, message, invocation_id="s")
        for member in (plain, deflated, raw):
            records = await member.read_until(lambda records: bool(group_messages(records)))
            assert group_messages(records) == [message]
        assert all(raw.compressed)
    finally:
        await asyncio.gather(plain.ws.close(), deflated.ws.close(), return_exceptions=True)
        await raw.close()


async def test_json_and_messagepack_members_of_one_group_each_get_their_own_frames(plain_server):
    """One send object serves both protocols' members (its text and binary frames are built once each and shared):
    each member gets its own protocol's record, at every size."""
    group = _group()
    messages = [message_for("json", size, seed) for seed, size in enumerate(SIZES)]
    members = [await Member.open(plain_server, protocol, compression=None) for protocol in PROTOCOLS * 3]
    try:
        for member in members:
            await member.join(group)
        for sender in members[:2]:  # first a JSON sender, then (once it is answered) a MessagePack one
            for index, message in enumerate(messages):
                await sender.invoke("SendToGroup", group, message, invocation_id=f"s{index}")
            await sender.read_until(answered(f"s{len(messages) - 1}"))
        for member in members:
            records = await member.read_until(lambda records: len(group_messages(records)) >= 2 * len(messages))
            assert group_messages(records) == messages * 2, member.protocol
    finally:
        await asyncio.gather(*(member.ws.close() for member in members), return_exceptions=True)


def _boundary_payloads_reach_official_clients(server: ServerProcess, node: NodeDriver, protocol: str) -> None:
    group = _group()
    url = server.http_url + "/interop"
    names = [f"{protocol}-{index}" for index in range(3)]
    for name in names:
        node.connect(name, url, protocol=protocol)
        node.invoke(name, "JoinGroup", group)
    messages = [message_for(protocol, size, seed) for seed, size in enumerate(SIZES)]
    for message in messages:
        assert node.invoke(names[0], "SendToGroup", group, message) is None
    for name in names:
        events = node.wait_for(name, lambda events: len(received(events)) >= len(messages), timeout=30)
        got = [args[1] for args in received(events)]
        assert len(got) == len(messages)
        for text, want in zip(got, messages, strict=True):
            assert text == want, f"{name}: a {len(want.encode())}-byte message differs"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_boundary_payloads_reach_every_official_client_intact(plain_server, node, protocol):
    _boundary_payloads_reach_official_clients(plain_server, node, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_boundary_payloads_reach_every_official_client_with_permessage_deflate(deflate_server, node, protocol):
    """The Node client (ws) offers permessage-deflate by default: negotiated here."""
    _boundary_payloads_reach_official_clients(deflate_server, node, protocol)


# ---------------------------------------------------------------------- (c) a large group, sliced


CROWD = 300
ROUNDS = 40


async def _open_crowd(server: ServerProcess, group: str) -> list[Member]:
    limit = asyncio.Semaphore(50)

    async def one() -> Member:
        async with limit:
            member = await Member.open(server, compression=None)
            await member.join(group)
            return member

    return list(await asyncio.gather(*(one() for _ in range(CROWD))))


async def test_a_sliced_send_to_300_members_reaches_the_caller_before_its_completion_and_keeps_order(sliced_server):
    """Every send here spans about ten event-loop turns (see ``sliced_server``): the waits and the queue show."""
    group = _group()
    members = await _open_crowd(sliced_server, group)
    try:
        # 1. Ten callers in turn: each must read its own group message before its invocation's completion
        #    (the hub method returns, and its completion is written, only once the last slice is delivered).
        callers = members[:10]
        for index, caller in enumerate(callers):
            mine, completion = ["group", f"call-{index}"], f"c{index}"
            await caller.invoke("SendToGroup", group, mine[1], invocation_id=completion)
            records = await caller.read_until(answered(completion))
            order = [
                "group" if message.get("arguments") == mine else "completion"
                for _size, message in records
                if message.get("arguments") == mine or message.get("invocationId") == completion
            ]
            assert order == ["group", "completion"], f"caller {index}: {order}"

        # 2. Four concurrent senders: two pipelining numbered SendToGroup calls, one numbered SendToAll calls
        #    (the hub's every connection: these 300, in another order than the group's), one SendSequence (one
        #    hub method sending Seq(0..ROUNDS-1)). Every member must get each sender's sends in order, each once.
        senders = members[10:13]
        sequencer = members[13]

        async def pipeline(number: int, sender: Member) -> None:
            def call(index: int) -> str:
                label = f"s{number}:{index}"
                arguments = [label] if number == 2 else [group, label]
                return str(
                    invocation("json", "SendToAll" if number == 2 else "SendToGroup", arguments, f"p{number}-{index}")
                )

            frame = "".join(call(index) for index in range(ROUNDS))
            await sender.ws.send(frame)  # all at once: the server runs them one after the other
            await sender.read_until(answered(f"p{number}-{ROUNDS - 1}"))

        async def sequence() -> None:
            await sequencer.invoke("SendSequence", group, ROUNDS, invocation_id="seq")
            await sequencer.read_until(answered("seq"))

        await asyncio.gather(*(pipeline(number, sender) for number, sender in enumerate(senders)), sequence())

        expected_total = len(callers) + len(senders) * ROUNDS

        def complete(records: list[Record]) -> bool:
            return len(group_messages(records)) >= expected_total and len(group_messages(records, "Seq")) >= ROUNDS

        sequences: list[list[str]] = []
        for member in members:
            records = await member.read_until(complete)
            got = group_messages(records)
            assert len(got) == expected_total and len(group_messages(records, "Seq")) == ROUNDS
            assert got[: len(callers)] == [f"call-{index}" for index in range(len(callers))]
            for number in range(len(senders)):
                mine = [text for text in got if text.startswith(f"s{number}:")]
                assert mine == [f"s{number}:{index}" for index in range(ROUNDS)], f"sender {number} out of order"
            assert group_messages(records, "Seq") == list(range(ROUNDS))
            sequences.append(
                [
                    f"{message['target']}:{message['arguments'][-1]}"
                    for _size, message in records
                    if message.get("target") in ("Receive", "Seq")
                ]
            )
        # One first-in, first-out queue per hub: every member sees the concurrent sends in the very same order,
        # whatever slice it was reached in (a later send's first slice never overtakes an earlier send's rest).
        differing = [index for index, sequence in enumerate(sequences) if sequence != sequences[0]]
        assert not differing, f"{len(differing)} members saw the sends in another order than the first member"
        # (How the senders interleave is up to the event loop; that they did at all shows concurrent sends.)
        owners = [
            label.split(":")[1] if label.startswith("Receive") else "seq" for label in sequences[0][len(callers) :]
        ]
        assert any(a != b for a, b in zip(owners, owners[1:], strict=False)), "the senders never interleaved"
    finally:
        await asyncio.gather(*(member.ws.close() for member in members), return_exceptions=True)


# ---------------------------------------------------------------------- (d) a member that stops reading


async def test_a_member_whose_socket_fills_gets_every_frame_intact_and_in_order(plain_server):
    """A member's socket is not read (a small receive buffer, its reading paused) while its group gets 3.6 MB: more
    than the server's socket takes (about 2.9 MB here), less than that plus the outbox bound. The server's direct
    writes send what the socket takes and queue the rest behind it (under daphne the 72nd frame is split between
    the socket and Twisted's buffer). Once the member reads again, every record arrives whole and in order."""
    group, count = _group(), 90
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", plain_server.port))
    sock.setblocking(False)
    late = await Member.open(plain_server, sock=sock, compression=None)
    sender = await Member.open(plain_server, compression=None)
    try:
        await late.join(group)
        late.ws.transport.pause_reading()
        messages = [f"{index}:{text_of(40_000, index)}" for index in range(count)]
        for message in messages:
            await sender.invoke("SendToGroup", group, message)
        await sender.invoke("Echo", "done", invocation_id="end")
        await sender.read_until(answered("end"))  # invocations run in order: every send above was made
        await asyncio.sleep(0.2)
        late.ws.transport.resume_reading()
        records = await late.read_until(lambda records: len(_received(records)) >= count, timeout=60)
        assert _received(records) == messages
    finally:
        await asyncio.gather(late.ws.close(), sender.ws.close(), return_exceptions=True)


def _received(records: list[Record]) -> list[str]:
    return [message["arguments"][1] for _size, message in records if message.get("target") == "Receive"]


def _overflowed(server: ServerProcess) -> set[str]:
    """The connections the server's log says its outbox bound closed (daphne's log has each warning twice)."""
    return set(re.findall(r"connection (\S+) is not reading; its outbox passed", server.log()))


async def test_a_member_that_stops_reading_is_closed_and_the_others_get_every_message(plain_server):
    """A sender floods a group (16 MB) with a stalled member in it: once the stalled socket stops taking writes its
    records queue (no direct write past a full socket), its outbox bound closes it, and the reading members get
    every send, in order.

    The sender keeps at most ``window`` sends ahead of the slowest reader, so that the readers (in this process,
    with the sender) cannot fall a megabyte behind and be closed too, which is what the outbox bound is for.
    """
    group = _group()
    count, size, window = 1000, 16_000, 30
    overflows_before = _overflowed(plain_server)
    stalled = await asyncio.to_thread(_stalled_member, plain_server.port, group)
    readers = [await Member.open(plain_server, compression=None) for _ in range(2)]
    progress = asyncio.Condition()
    counts = [0] * len(readers)

    def caught_up(position: int) -> bool:
        return min(counts) >= position

    try:
        for reader in readers:
            await reader.join(group)

        async def read_all(number: int, member: Member) -> list[str]:
            numbers: list[str] = []
            async with asyncio.timeout(120):
                while len(numbers) < count:
                    for _size, message in parse(await member.ws.recv()):
                        if message.get("target") == "Receive":
                            numbers.append(message["arguments"][1].split(":", 1)[0])
                    async with progress:
                        counts[number] = len(numbers)
                        progress.notify_all()
            return numbers

        reading = [asyncio.ensure_future(read_all(number, reader)) for number, reader in enumerate(readers)]
        async with connect(plain_server.ws_url + "/interop", compression=None) as sender:
            await sender.send(handshake("json"))
            assert await sender.recv() == "{}" + RS
            filler = "x" * size
            for start in range(0, count, 10):
                async with progress:
                    await asyncio.wait_for(progress.wait_for(functools.partial(caught_up, start - window)), 60)
                batch = (
                    str(invocation("json", "SendToGroup", [group, f"{index}:{filler}"]))
                    for index in range(start, start + 10)
                )
                await sender.send("".join(batch))  # no invocation ids: nothing comes back
            # Invocations run in order: once this one is answered, every send above was made (closing the
            # sender before that would drop the ones the server had not read yet).
            await sender.send(str(invocation("json", "Echo", ["done"], "end")))
            async with asyncio.timeout(60):
                while '"invocationId":"end"' not in str(await sender.recv()):
                    pass
        for numbers in await asyncio.gather(*reading):
            assert numbers == [str(index) for index in range(count)], "a reading member missed or reordered a send"
        assert await asyncio.to_thread(_closed_by_server, stalled, 20), "the stalled member was not closed"
        overflows = _overflowed(plain_server) - overflows_before
        assert len(overflows) == 1, (
            f"{sorted(overflows)}: connections closed by their outbox bound (the stalled one only)"
        )
    finally:
        stalled.close()
        await asyncio.gather(*(reader.ws.close() for reader in readers), return_exceptions=True)
