"""Load-generating clients for the other transports and protocols: WebSockets with MessagePack, Server-Sent Events
and long polling (JSON or MessagePack), used by the ``transports`` scenario (bench/scenarios.py).

They feed the same :class:`~bench.client.Sink` as the WebSocket/JSON connections of bench/client.py and find the
same 64-character payload ``B<seq:9><scheduled ns:19>x...`` in each received record, without decoding it:

- JSON records are split on 0x1E and searched for ``"B``;
- MessagePack messages are split by their VarInt length prefixes and searched for ``\\xd9\\x40B`` (the payload
  as a MessagePack ``str 8`` of 64 bytes).

HTTP transports negotiate (``POST /hub/negotiate?negotiateVersion=1``) and then, per ASP.NET Core's protocol:

- Server-Sent Events: one ``GET /hub?id=<token>`` with ``Accept: text/event-stream`` held open, read chunk by
  chunk (events are ``data: <records>\\r\\n\\r\\n``; records are split on 0x1E across chunk boundaries);
- long polling: a first ``GET`` that returns at once, then one pending ``GET`` per member, re-issued as soon as
  the previous one returned (each answer is whole records);
- client->server data (the handshake, ``JoinGroup``, pings) as ``POST /hub?id=<token>``, without waiting
  (a task per POST, so an open-loop sender never blocks on a response).

All members of a variant share one aiohttp session (its connection pool: one connection per pending poll or
stream, keep-alive reuse for the rest) and one asyncio loop, the suite's (the load generator is one process,
pinned to its core, as for every other scenario). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import msgpack
from websockets.asyncio.client import ClientConnection, connect

from bench.client import HANDSHAKE, PING, RS, Sink, open_conn

RSB = b"\x1e"
JSON_PING = PING.encode()
MSGPACK_HANDSHAKE = '{"protocol":"messagepack","version":1}' + RS
MSGPACK_PING = b"\x02\x91\x06"  # length 2, then [6]
#: The 64-character payload as MessagePack (str 8, length 64): its marker, then seq at +3 and the send time at +12.
MSGPACK_MARK = b"\xd9\x40B"
#: What every variant is called in the results: transport/protocol.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
)
OPEN_TIMEOUT = 30.0


def varint(length: int) -> bytes:
    """The MessagePack hub protocol's length prefix."""
    out = bytearray()
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def json_invocation(target: str, args: tuple[Any, ...], invocation_id: str | None) -> bytes:
    """One JSON hub protocol invocation record."""
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message, separators=(",", ":")).encode() + RSB


def msgpack_invocation(target: str, args: tuple[Any, ...], invocation_id: str | None) -> bytes:
    """One MessagePack hub protocol invocation: ``[1, {}, id|nil, target, [args], []]`` with its length prefix."""
    body: bytes = msgpack.packb([1, {}, invocation_id, target, list(args), []], use_bin_type=True)
    return varint(len(body)) + body


def record_json(data: bytes, sink: Sink, index: int, now: int) -> int:
    """Record the payloads of whole JSON records in ``data`` (one or more, each ending in 0x1E); return the count."""
    found = 0
    pos = data.find(b'"B')
    while pos >= 0:
        sink.record(index, int(data[pos + 2 : pos + 11]), int(data[pos + 11 : pos + 30]), now)
        found += 1
        pos = data.find(b'"B', pos + 30)
    return found


def record_msgpack(data: bytes, start: int, sink: Sink, index: int, now: int) -> int:
    """Split ``data[start:]`` into MessagePack messages by their VarInt prefixes; record their payloads."""
    found, end, pos = 0, len(data), start
    while pos < end:
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        stop = pos + length
        mark = data.find(MSGPACK_MARK, pos, stop)
        if mark >= 0:
            sink.record(index, int(data[mark + 3 : mark + 12]), int(data[mark + 12 : mark + 31]), now)
            found += 1
        pos = stop
    return found


def _check_handshake(record: bytes) -> None:
    if b"error" in record or b"{}" not in record:
        raise RuntimeError(f"handshake response expected, got {record[:200]!r}")


class MsgpackWsConn:
    """A WebSocket member speaking the MessagePack hub protocol (binary frames after the JSON handshake)."""

    ping = MSGPACK_PING

    def __init__(self, ws: ClientConnection, index: int, sink: Sink) -> None:
        self.ws, self.index, self.sink = ws, index, sink
        self.next_ack = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        ws, sink, index = self.ws, self.sink, self.index
        clock = time.monotonic_ns
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    record_msgpack(data, 0, sink, index, clock())
        except Exception:  # the server went away or dropped us: the counts show it
            return

    async def send_raw(self, data: bytes) -> None:
        """Send one binary frame."""
        await self.ws.send(data)

    async def call(self, target: str, *args: Any, ack: bool = False) -> None:
        """Invoke ``target`` without waiting."""
        invocation_id = None
        if ack:
            self.next_ack += 1
            invocation_id = str(self.next_ack)
        await self.ws.send(msgpack_invocation(target, args, invocation_id))

    async def close(self) -> None:
        """Drop the TCP connection."""
        self.reader.cancel()
        self.ws.transport.abort()


async def open_msgpack_ws(url: str, index: int, sink: Sink) -> MsgpackWsConn:
    """Connect and complete the handshake (JSON text; the answer ``{}\\x1e`` is text too)."""
    ws = await connect(url, compression=None, max_queue=None, max_size=None, open_timeout=60, ping_interval=None)
    try:
        await ws.send(MSGPACK_HANDSHAKE)
        reply = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT)
        _check_handshake(reply.encode() if isinstance(reply, str) else reply)
    except BaseException:
        ws.transport.abort()
        raise
    return MsgpackWsConn(ws, index, sink)


class JsonWsMember:
    """bench.client.Conn (the JSON WebSocket client of every other scenario) with the member interface."""

    ping = JSON_PING

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def send_raw(self, data: bytes) -> None:
        """Send one text frame."""
        await self.conn.ws.send(data.decode())

    async def call(self, target: str, *args: Any, ack: bool = False) -> None:
        """Invoke ``target`` without waiting."""
        await self.conn.call(target, *args, ack=ack)

    async def close(self) -> None:
        """Drop the TCP connection."""
        self.conn.abort()


class HttpMember:
    """One member on Server-Sent Events or long polling; client->server data as POSTs that nobody awaits."""

    def __init__(self, http: HttpClients, token: str, index: int, protocol: str, transport: str) -> None:
        self.http, self.index, self.protocol, self.transport = http, index, protocol, transport
        self.url = f"{http.base}{http.path}?id={token}"
        self.binary = protocol == "messagepack"
        self.ping = MSGPACK_PING if self.binary else JSON_PING
        self.next_ack = 0
        self.handshaken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reader: asyncio.Future[None] | None = None
        self.closed = False

    # ------------------------------------------------------------------ client -> server

    async def send_raw(self, data: bytes) -> None:
        """POST ``data`` in the background."""
        self.http.post(self.url, data)

    async def call(self, target: str, *args: Any, ack: bool = False) -> None:
        """Invoke ``target`` (a background POST)."""
        invocation_id = None
        if ack:
            self.next_ack += 1
            invocation_id = str(self.next_ack)
        writer = msgpack_invocation if self.binary else json_invocation
        self.http.post(self.url, writer(target, args, invocation_id))

    # ------------------------------------------------------------------ server -> client

    def _handshake_answer(self, data: bytes) -> int:
        """Before the handshake's answer: take it from ``data``; where the protocol's messages start (-1: not yet)."""
        end = data.find(RSB)
        if end < 0:
            return -1
        try:
            _check_handshake(data[: end + 1])
        except RuntimeError as exc:
            if not self.handshaken.done():
                self.handshaken.set_exception(exc)
            raise
        if not self.handshaken.done():
            self.handshaken.set_result(None)
        return end + 1

    def _whole(self, data: bytes, now: int) -> None:
        """Whole records (a poll's answer): the handshake's answer first, then the protocol's messages."""
        start = 0
        if not self.handshaken.done():
            start = self._handshake_answer(data)
            if start < 0:
                return
        if self.binary:
            record_msgpack(data, start, self.http.sink, self.index, now)
        else:
            record_json(data[start:] if start else data, self.http.sink, self.index, now)

    async def _poll_loop(self) -> None:
        session, url, clock = self.http.session, self.url, time.monotonic_ns
        try:
            while not self.closed:
                async with session.get(url) as response:
                    status = response.status
                    body = await response.read()
                if status == 204:  # the connection ended
                    return
                if status != 200:
                    raise RuntimeError(f"poll answered {status}: {body[:200]!r}")
                if body:
                    self.http.polls += 1
                    self._whole(body, clock())
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            if not self.closed:
                self.http.errors.append(f"poll {self.index}: {exc!r}")
                if not self.handshaken.done():
                    self.handshaken.set_exception(exc)

    async def _stream(self, response: aiohttp.ClientResponse) -> None:
        """Read the event stream: split on 0x1E across chunks (the ``data:`` framing stays in the records, unread)."""
        sink, index, clock = self.http.sink, self.index, time.monotonic_ns
        content = response.content
        rest = b""
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                data = rest + chunk if rest else chunk
                end = data.rfind(RSB)
                if end < 0:
                    rest = data
                    continue
                rest = data[end + 1 :]
                whole = data[: end + 1]
                if not self.handshaken.done():
                    start = self._handshake_answer(whole)
                    whole = whole[start:]
                record_json(whole, sink, index, clock())
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            if not self.closed:
                self.http.errors.append(f"stream {self.index}: {exc!r}")
                if not self.handshaken.done():
                    self.handshaken.set_exception(exc)
        finally:
            response.close()

    async def start(self) -> None:
        """Open the transport, send the handshake, wait for its answer."""
        session = self.http.session
        handshake = (MSGPACK_HANDSHAKE if self.binary else HANDSHAKE).encode()
        if self.transport == "ServerSentEvents":
            response = await session.get(self.url, headers={"Accept": "text/event-stream"})
            if response.status != 200:
                body = await response.read()
                response.close()
                raise RuntimeError(f"event stream answered {response.status}: {body[:200]!r}")
            self.reader = asyncio.ensure_future(self._stream(response))
        else:
            async with session.get(self.url) as response:  # the first poll returns at once
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"first poll answered {response.status}: {body[:200]!r}")
            self.reader = asyncio.ensure_future(self._poll_loop())
        self.http.post(self.url, handshake)
        await asyncio.wait_for(asyncio.shield(self.handshaken), OPEN_TIMEOUT)

    async def close(self) -> None:
        """Long polling: DELETE (the server ends the connection); then stop reading and drop the stream or poll."""
        if self.transport == "LongPolling" and not self.closed:
            try:
                async with self.http.session.delete(self.url) as response:
                    await response.read()
            except Exception:  # ending anyway
                pass
        self.closed = True
        if self.reader is not None:
            self.reader.cancel()


class HttpClients:
    """The shared aiohttp session of one variant's HTTP members, and their background POSTs."""

    def __init__(self, base: str, path: str, sink: Sink) -> None:
        self.base, self.path, self.sink = base, path, sink
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=False),
            timeout=aiohttp.ClientTimeout(total=None, connect=OPEN_TIMEOUT, sock_read=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            read_bufsize=1 << 16,
        )
        self.pending: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        #: Poll answers that carried data (long polling): deliveries per poll shows how much the server batched.
        self.polls = 0

    def post(self, url: str, data: bytes) -> None:
        """POST ``data`` in a task (one retry: the server may have closed an idle keep-alive connection)."""
        task = asyncio.ensure_future(self._post(url, data))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _post(self, url: str, data: bytes) -> None:
        for attempt in (1, 2):
            try:
                async with self.session.post(url, data=data) as response:
                    await response.read()
                    if response.status != 200:
                        self.errors.append(f"POST answered {response.status}")
                return
            except aiohttp.ClientError as exc:
                if attempt == 2:
                    self.errors.append(f"POST failed: {exc!r}")

    async def negotiate(self) -> str:
        """``POST <hub>/negotiate?negotiateVersion=1``: the connection token."""
        async with self.session.post(f"{self.base}{self.path}/negotiate?negotiateVersion=1") as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"negotiate answered {response.status}: {body[:200]!r}")
        return str(json.loads(body)["connectionToken"])

    async def close(self) -> None:
        """Cancel the POSTs still running; close the session (its sockets)."""
        for task in list(self.pending):
            task.cancel()
        await self.session.close()


class Members:
    """The members of one variant (transport/protocol), with keep-alive pings like bench.client.Pool's."""

    def __init__(self, transport: str, protocol: str, ws_base: str, path: str, sink: Sink) -> None:
        self.transport, self.protocol = transport, protocol
        self.ws_base, self.path, self.sink = ws_base, path, sink
        self.http = (
            HttpClients(ws_base.replace("ws://", "http://", 1), path, sink) if transport != "WebSockets" else None
        )
        self.conns: list[Any] = []
        self._keepalive = asyncio.ensure_future(self._ping_loop())

    async def _ping_loop(self) -> None:
        """Each member pings every 15 s (the official clients' keep-alive), phases spread evenly."""
        slices, tick = 30, 0
        while True:  # bounded by close(), which cancels it
            await asyncio.sleep(15 / slices)
            tick = (tick + 1) % slices
            for conn in self.conns[tick::slices]:
                try:
                    await conn.send_raw(conn.ping)
                except Exception:
                    continue

    async def _open(self, index: int) -> Any:
        if self.transport == "WebSockets":
            if self.protocol == "json":
                return JsonWsMember(await open_conn(self.ws_base, self.path, "signalr", index, self.sink))
            return await open_msgpack_ws(f"{self.ws_base}{self.path}", index, self.sink)
        assert self.http is not None
        member = HttpMember(self.http, await self.http.negotiate(), index, self.protocol, self.transport)
        try:
            await member.start()
        except BaseException:
            await member.close()
            raise
        return member

    async def add(self, count: int, first_index: int) -> float:
        """Open ``count`` members (100 opening at once); connects per second."""
        limit = asyncio.Semaphore(100)

        async def one(index: int) -> Any:
            async with limit:
                return await self._open(index)

        started = time.perf_counter()
        opened = await asyncio.gather(*(one(first_index + i) for i in range(count)), return_exceptions=True)
        elapsed = time.perf_counter() - started
        failures = [item for item in opened if isinstance(item, BaseException)]
        self.conns.extend(item for item in opened if not isinstance(item, BaseException))
        if failures:
            raise RuntimeError(
                f"{len(failures)} of {count} {self.transport}/{self.protocol} members failed: {failures[0]!r}"
            )
        return count / elapsed

    def polls(self) -> int:
        """Poll answers with data so far (0 off long polling)."""
        return self.http.polls if self.http is not None else 0

    def errors(self) -> list[str]:
        """Errors of the HTTP clients (failed POSTs or polls) so far."""
        return list(self.http.errors) if self.http is not None else []

    async def close(self) -> None:
        """End every member (long polling: DELETE, 100 at once), then drop the sockets."""
        self._keepalive.cancel()
        limit = asyncio.Semaphore(100)

        async def one(conn: Any) -> None:
            async with limit:
                await conn.close()

        try:
            await asyncio.wait_for(asyncio.gather(*(one(conn) for conn in self.conns), return_exceptions=True), 60)
        finally:
            self.conns.clear()
            if self.http is not None:
                await self.http.close()
