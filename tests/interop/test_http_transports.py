"""Server-Sent Events, long polling and MessagePack on the wire, against real daphne and uvicorn processes.

Raw HTTP requests (aiohttp) and raw WebSockets (websockets), checked against what ASP.NET Core's
``HttpConnectionDispatcher`` answers (``dotnet/aspnetcore:src/SignalR/docs/specs/TransportProtocols.md``,
``../shared/docs/signalr-protocol.md`` §§1-4 and 8): exact statuses and bodies, the long-polling and
event-stream framing, the timeouts, and hostile MessagePack records that must end in a Close message,
never a crash, with the server's memory bounded.

Processes: the session's daphne and this module's uvicorn with the default settings, a daphne and a
uvicorn with small timeouts (:data:`FAST`), and a uvicorn serving long polling only; each is stopped
by its PID.

daphne writes its access log straight to stdout, past logging filters: the app wraps its writer so
that the ``id=`` and ``access_token=`` of SSE and long-polling requests never show in it
(``test_tokens_never_reach_the_server_log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.interop.test_hostile_clients import PeakRss
from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(60)

RS = "\x1e"
JSON_HANDSHAKE = '{"protocol":"json","version":1}' + RS
MSGPACK_HANDSHAKE = '{"protocol":"messagepack","version":1}' + RS
NOT_FOUND = b"No Connection with that ID"
ID_REQUIRED = b"Connection ID required"
MID_CONNECTION = b"Cannot change transports mid-connection"
GENERIC_CLOSE = "Connection closed with an error."
#: What a request may take at most in these tests (a long poll on the session's daphne waits 90 s: never let it).
TIMEOUT = 10.0
#: The small timeouts of the per-module processes.
FAST: dict[str, Any] = {
    "DISCONNECT_TIMEOUT": 2,
    "LONG_POLLING_POLL_TIMEOUT": 2,
    "KEEP_ALIVE_INTERVAL": 1,
    "CLIENT_TIMEOUT": 3,
    "MAX_MESSAGE_SIZE": 256 * 1024,
}
ALL_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]
NO_CACHE = {"Cache-Control": "no-cache, no-store", "Pragma": "no-cache", "Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}


# ---------------------------------------------------------------- processes


def _start_server(tmp_path_factory: pytest.TempPathFactory, server: str, hub_settings: dict[str, Any]) -> ServerProcess:
    log_path: Path = tmp_path_factory.mktemp(f"http-{server}") / "server.log"
    return ServerProcess(
        log_path,
        str(django_settings.DATABASES["default"]["NAME"]),
        server=server,
        # Unbuffered: daphne writes its access log to stdout, which the log checks read while it runs.
        extra_env={"SIGNALR_TEST_SETTINGS": json.dumps(hub_settings), "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def fast_server(request, django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with the small timeouts of :data:`FAST`, on daphne and on uvicorn."""
    process = _start_server(tmp_path_factory, request.param, FAST)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def uvicorn_server(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """uvicorn with the default settings (the session's daphne has them too)."""
    process = _start_server(tmp_path_factory, "uvicorn", {})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def long_polling_only(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """uvicorn (it sends real statuses for refused WebSockets) with ``TRANSPORTS = ["LongPolling"]``."""
    process = _start_server(tmp_path_factory, "uvicorn", {"TRANSPORTS": ["LongPolling"]})
    yield process
    process.stop()


@pytest.fixture
def rooms(live_users) -> dict[str, str]:
    """The users' cookies, and the demo's room ``lobby`` (ChatHub tells a room's members who left it)."""
    from hubproject.chat.models import Room

    Room.objects.create(slug="lobby", name="Lobby")
    return live_users


# ---------------------------------------------------------------- HTTP helpers


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes


def records(body: bytes) -> list[dict[str, Any]]:
    """The JSON records of a poll's body or an event: whole records only, each ending in 0x1E."""
    text = body.decode("utf-8")
    assert text.endswith(RS), f"a record was split: {text[-80:]!r}"
    return [json.loads(record) for record in text.split(RS)[:-1]]


def invocation(target: str, *arguments: Any, invocation_id: str | None = None) -> str:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message) + RS


class Http:
    """Requests to one server's hubs, with a fresh aiohttp session (no cookie jar: cookies are explicit)."""

    def __init__(self, session: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.session = session
        self.server = server

    def url(self, hub: str = "interop") -> str:
        return f"{self.server.http_url}/{hub}"

    async def negotiate(
        self, hub: str = "interop", *, version: int | None = 1, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        query = "" if version is None else f"?negotiateVersion={version}"
        async with self.session.post(f"{self.url(hub)}/negotiate{query}", headers=headers or {}) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())

    async def request(
        self,
        method: str,
        hub: str = "interop",
        *,
        query: str = "",
        data: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = TIMEOUT,
    ) -> Reply:
        url = self.url(hub) + (f"?{query}" if query else "")
        async with self.session.request(
            method, url, data=data, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    @contextlib.asynccontextmanager
    async def event_stream(
        self, hub: str = "interop", *, query: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[EventStream]:
        """An open ``GET`` with ``Accept: text/event-stream`` (its status and headers not checked here)."""
        response = await self.session.get(
            f"{self.url(hub)}?{query}",
            headers={"Accept": "text/event-stream", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT),
        )
        try:
            yield EventStream(response)
        finally:
            response.close()  # the client is gone: the server sees the request's disconnect


@pytest.fixture(params=["daphne", "uvicorn"])
def default_server(request) -> ServerProcess:
    """A server with the default settings: the session's daphne, or this module's uvicorn."""
    return request.getfixturevalue("live_server_process" if request.param == "daphne" else "uvicorn_server")


@pytest.fixture
async def http(default_server) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield Http(session, default_server)


@pytest.fixture
async def fast_http(fast_server) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield Http(session, fast_server)


class LongPolling:
    """One long-polling connection, driven by hand."""

    def __init__(self, http: Http, token: str, hub: str = "interop", headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.token = token
        self.hub = hub
        self.headers = headers or {}

    async def poll(self, timeout: float = TIMEOUT) -> Reply:
        query = f"id={self.token}&_={int(time.time() * 1000)}"
        return await self.http.request("GET", self.hub, query=query, headers=self.headers, timeout=timeout)

    async def post(self, data: str | bytes) -> Reply:
        return await self.http.request("POST", self.hub, query=f"id={self.token}", data=data, headers=self.headers)

    async def delete(self) -> Reply:
        return await self.http.request("DELETE", self.hub, query=f"id={self.token}", headers=self.headers)

    async def start(self, handshake: str = JSON_HANDSHAKE) -> None:
        """The first poll (200, empty, at once), the handshake POST, and the poll that answers it."""
        first = await self.poll()
        assert (first.status, first.body) == (200, b"")
        assert first.headers["Content-Type"] == "application/octet-stream"
        assert {key: first.headers.get(key) for key in NO_CACHE} == NO_CACHE
        posted = await self.post(handshake)
        assert (posted.status, posted.body) == (200, b"")
        answer = await self.poll()
        assert (answer.status, answer.body) == (200, b"{}" + RS.encode())

    async def invoke(self, target: str, *arguments: Any, invocation_id: str = "1") -> dict[str, Any]:
        """Invoke and poll (a few times at most) for the completion; other records are skipped."""
        assert (await self.post(invocation(target, *arguments, invocation_id=invocation_id))).status == 200
        for _ in range(5):
            reply = await self.poll()
            assert reply.status == 200, reply
            for message in records(reply.body) if reply.body else []:
                if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                    return message
        raise AssertionError(f"no completion for {target}")


async def start_long_polling(
    http: Http, hub: str = "interop", *, cookie: str | None = None, handshake: str = JSON_HANDSHAKE
) -> LongPolling:
    headers = {"Cookie": cookie} if cookie else {}
    token = (await http.negotiate(hub, headers=headers))["connectionToken"]
    connection = LongPolling(http, token, hub, headers)
    await connection.start(handshake)
    return connection


class EventStream:
    """The events of an open Server-Sent Events response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer = b""
        self._messages: list[dict[str, Any]] = []

    async def _read(self, timeout: float) -> bool:
        chunk = await asyncio.wait_for(self.response.content.readany(), timeout)
        self._buffer += chunk
        return bool(chunk)

    async def preamble(self, timeout: float = TIMEOUT) -> bytes:
        """The first bytes: the ``:`` comment line that makes browsers fire ``open``."""
        while len(self._buffer) < 3 and await self._read(timeout):
            pass
        first, self._buffer = self._buffer[:3], self._buffer[3:]
        return first

    async def event(self, timeout: float = TIMEOUT) -> str | None:
        """The next event's data (its ``data:`` lines joined by LF), or None once the response ended."""
        while b"\r\n\r\n" not in self._buffer:
            if not await self._read(timeout):
                assert self._buffer == b"", f"the stream ended inside an event: {self._buffer!r}"
                return None
        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("utf-8").split("\r\n")
        assert all(line.startswith("data: ") for line in lines), raw
        return "\n".join(line.removeprefix("data: ") for line in lines)

    async def message(self, timeout: float = TIMEOUT, *, skip_pings: bool = True) -> dict[str, Any] | None:
        """The next hub message (an event holds whole records, one or more), or None once the response ended."""
        while True:
            while not self._messages:
                data = await self.event(timeout)
                if data is None:
                    return None
                self._messages.extend(records(data.encode()))
            message = self._messages.pop(0)
            if not (skip_pings and message == {"type": 6}):
                return message


async def open_event_stream(
    http: Http, stack: contextlib.AsyncExitStack, hub: str = "interop", *, cookie: str | None = None
) -> tuple[EventStream, LongPolling]:
    """Negotiate, open the stream, handshake: the stream and a sender (POSTs) for the connection."""
    headers = {"Cookie": cookie} if cookie else {}
    token = (await http.negotiate(hub, headers=headers))["connectionToken"]
    stream = await stack.enter_async_context(http.event_stream(hub, query=f"id={token}", headers=headers))
    assert stream.response.status == 200
    assert await stream.preamble() == b":\r\n"
    sender = LongPolling(http, token, hub, headers)
    assert (await sender.post(JSON_HANDSHAKE)).status == 200
    assert await stream.event() == "{}" + RS
    return stream, sender


async def sse_invoke(stream: EventStream, sender: LongPolling, target: str, *arguments: Any) -> dict[str, Any]:
    assert (await sender.post(invocation(target, *arguments, invocation_id="1"))).status == 200
    while True:
        message = await stream.message()
        assert message is not None, "the stream ended"
        if message.get("type") == 3 and message.get("invocationId") == "1":
            return message


async def refused_once_ended(sender: LongPolling) -> Reply:
    """POST (a Ping) to a connection whose event stream has ended: refused at once, as ASP.NET Core does
    (the server ends the response only once the connection is marked ended)."""
    return await sender.post('{"type":6}' + RS)


# ---------------------------------------------------------------- WebSocket helpers


async def ws_json(server: ServerProcess, hub: str, cookie: str) -> ClientConnection:
    ws = await connect(f"{server.ws_url}/{hub}", additional_headers={"Cookie": cookie})
    await ws.send(JSON_HANDSHAKE)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "{}" + RS
    return ws


async def ws_wait_for(ws: ClientConnection, predicate: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The first JSON message ``predicate`` accepts (others skipped), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        for message in records(raw.encode() if isinstance(raw, str) else raw):
            if predicate(message):
                return message


def varint(length: int) -> bytes:
    prefix = bytearray()
    while length > 0x7F:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix)


def framed(body: bytes) -> bytes:
    """A MessagePack hub message: its body behind a VarInt length prefix."""
    return varint(len(body)) + body


def packed(message: Any) -> bytes:
    return framed(msgpack.packb(message, use_bin_type=True))


class MessagePackSocket:
    """A WebSocket speaking the MessagePack hub protocol, its messages read by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._buffer = b""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, server: ServerProcess, hub: str = "interop") -> AsyncIterator[MessagePackSocket]:
        async with connect(f"{server.ws_url}/{hub}", max_size=None) as ws:
            await ws.send(MSGPACK_HANDSHAKE)  # the handshake is JSON text, as the JS client sends it
            answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
            answer = answer.encode() if isinstance(answer, str) else answer
            assert answer.startswith(b"{}" + RS.encode()), answer
            socket = cls(ws)
            socket._buffer = answer[3:]
            yield socket

    async def message(self, timeout: float = TIMEOUT, *, skip_pings: bool = True) -> list[Any]:
        """The next message; raises ConnectionClosed once the server closed."""
        while True:
            message = self._take()
            if message is None:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
                assert isinstance(frame, bytes), f"a text frame on a MessagePack connection: {frame!r}"
                self._buffer += frame
                continue
            if not (skip_pings and message == [6]):
                return message

    def _take(self) -> list[Any] | None:
        length = shift = index = 0
        while True:
            if index >= len(self._buffer):
                return None
            byte = self._buffer[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            index += 1
            if not byte & 0x80:
                break
        if len(self._buffer) - index < length:
            return None
        body, self._buffer = self._buffer[index : index + length], self._buffer[index + length :]
        message = msgpack.unpackb(body, raw=False, timestamp=3)
        assert isinstance(message, list)
        return message

    async def invoke(self, target: str, *arguments: Any, invocation_id: str = "1") -> list[Any]:
        await self.ws.send(packed([1, {}, invocation_id, target, list(arguments)]))  # 5 elements, as the JS client
        while True:
            message = await self.message()
            if message[0] == 3 and message[2] == invocation_id:
                return message

    async def closed_with(self, timeout: float = TIMEOUT) -> list[Any]:
        """The Close message the server sends; then, as the JS client, close the socket (cleanly)."""
        close = await self.message(timeout)
        await self.ws.close()
        assert self.ws.close_code == 1000, self.ws.close_code
        return close


# ================================================================ negotiate and the transports on offer


@pytest.mark.parametrize("version", [None, 1])
async def test_negotiate_lists_every_transport_in_preference_order(http, version):
    body = await http.negotiate(version=version)
    assert body["availableTransports"] == ALL_TRANSPORTS
    assert body["negotiateVersion"] == (version or 0)
    assert ("connectionToken" in body) is (version == 1)


async def test_a_long_polling_only_server_refuses_the_other_transports(long_polling_only):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        http = Http(session, long_polling_only)
        for version in (None, 1):
            body = await http.negotiate(version=version)
            assert body["availableTransports"] == [ALL_TRANSPORTS[2]]
        token = (await http.negotiate())["connectionToken"]

        refused = await http.request("GET", query=f"id={token}", headers={"Accept": "text/event-stream"})
        assert (refused.status, refused.body) == (
            404,
            b"ServerSentEvents transport not supported by this end point type",
        )
        for query in (f"?id={token}", ""):
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"{long_polling_only.ws_url}/interop{query}"):
                    pass
            assert info.value.response.status_code == 404
            assert info.value.response.body == b"WebSockets transport not supported by this end point type"

        # The refusals did not use the token up: long polling works with it.
        connection = LongPolling(http, token)
        await connection.start()
        assert (await connection.invoke("Echo", "lp only"))["result"] == "lp only"
        assert (await connection.delete()).status == 202


# ================================================================ long polling


async def test_long_polling_round_trip_and_delete(http):
    token = (await http.negotiate())["connectionToken"]
    connection = LongPolling(http, token)
    started = time.monotonic()
    await connection.start()  # the first poll answered at once, the handshake, then {}
    assert time.monotonic() - started < 3
    answer = await connection.invoke("Echo", {"nested": ["value", 1]})
    assert answer == {"type": 3, "invocationId": "1", "result": {"nested": ["value", 1]}}
    posted = await connection.post(invocation("Add", 2, 3, invocation_id="2"))
    assert posted.headers["Content-Type"].startswith("text/plain")
    reply = await connection.poll()
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert {key: reply.headers.get(key) for key in NO_CACHE} == NO_CACHE
    assert records(reply.body) == [{"type": 3, "invocationId": "2", "result": 5}]

    deleted = await connection.delete()
    assert (deleted.status, deleted.body) == (202, b"")
    # The next poll ends the transport (204), after the Close record if the server wrote one; then nothing is left.
    statuses = []
    for _ in range(3):
        reply = await connection.poll()
        statuses.append(reply.status)
        if reply.status != 200:
            break
        assert all(message["type"] == 7 for message in records(reply.body)), reply.body
    assert statuses[-1] == 204, statuses
    gone = await connection.poll()
    assert (gone.status, gone.body) == (404, NOT_FOUND)
    late = await connection.post(invocation("Echo", "too late"))
    assert (late.status, late.body) == (404, NOT_FOUND)
    assert (await connection.delete()).status == 404
    # A token is good for one connection: used again, it finds nothing.
    reused = await LongPolling(http, token).poll()
    assert (reused.status, reused.body) == (404, NOT_FOUND)


async def test_a_post_before_the_first_poll_starts_a_long_polling_connection(http, live_users):
    """As ASP.NET Core, whose connection exists from negotiate on (signalrcore sends its handshake first)."""
    alice, bob = {"Cookie": live_users["alice"]}, {"Cookie": live_users["bob"]}
    token = (await http.negotiate(headers=alice))["connectionToken"]
    stolen = await LongPolling(http, token, headers=bob).post(JSON_HANDSHAKE)
    assert (stolen.status, stolen.body) == (404, NOT_FOUND)  # another user's first POST starts nothing
    connection = LongPolling(http, token, headers=alice)
    posted = await connection.post(JSON_HANDSHAKE)
    assert (posted.status, posted.body) == (200, b"")
    answer = await connection.poll()
    assert (answer.status, answer.body) == (200, b"{}" + RS.encode())
    sse = await http.request("GET", query=f"id={token}", headers={"Accept": "text/event-stream", **alice})
    assert (sse.status, sse.body) == (400, MID_CONNECTION)
    assert (await connection.invoke("GetUserIdentifier"))["result"] == "alice"
    assert (await connection.delete()).status == 202


async def test_records_are_never_split_across_polls(http):
    """600 completions of varied sizes, polled while they are produced: every poll body is whole records."""
    connection = await start_long_polling(http)
    total, batch = 600, 10
    # Values of 0 to 5 KB; some hold the separator and line breaks, which the JSON must escape.
    expected = {
        str(index): "x" * (index * 37 % 5000) + ("\x1e\r\n" if index % 7 == 0 else "") for index in range(total)
    }
    received: dict[str, Any] = {}
    per_poll: list[int] = []
    progress = asyncio.Condition()

    async def poller() -> None:
        while len(received) < total:
            reply = await connection.poll()
            assert reply.status == 200, reply
            messages = records(reply.body) if reply.body else []
            per_poll.append(len(messages))
            for message in messages:
                assert message["type"] == 3, message
                received[message["invocationId"]] = message["result"]
            async with progress:
                progress.notify_all()

    async def sender() -> None:
        keys = list(expected)
        for start in range(0, total, batch):
            async with progress:  # a window, not a flood (the server bounds pending invocations)

                def caught_up(window_start: int = start) -> bool:
                    return window_start - len(received) <= 40

                await progress.wait_for(caught_up)
            body = "".join(invocation("Echo", expected[key], invocation_id=key) for key in keys[start : start + batch])
            assert (await connection.post(body)).status == 200

    await asyncio.wait_for(asyncio.gather(poller(), sender()), 30)
    assert received == expected
    assert max(per_poll) > 1, "each poll carried one record: nothing was batched"
    assert (await connection.delete()).status == 202


async def test_a_newer_poll_makes_the_waiting_one_return_204(http):
    connection = await start_long_polling(http)
    first = asyncio.ensure_future(connection.poll())
    await asyncio.sleep(0.3)
    assert not first.done()
    second = asyncio.ensure_future(connection.poll())
    replaced = await asyncio.wait_for(first, TIMEOUT)
    assert (replaced.status, replaced.body) == (204, b"")
    await asyncio.sleep(0.2)
    assert not second.done()
    assert (await connection.post(invocation("Echo", "to the newer poll", invocation_id="7"))).status == 200
    answer = await asyncio.wait_for(second, TIMEOUT)
    assert answer.status == 200
    assert records(answer.body) == [{"type": 3, "invocationId": "7", "result": "to the newer poll"}]
    # The connection goes on.
    assert (await connection.invoke("Echo", "still here"))["result"] == "still here"
    assert (await connection.delete()).status == 202


async def test_a_delete_ends_the_waiting_poll_with_204(http):
    connection = await start_long_polling(http)
    waiting = asyncio.ensure_future(connection.poll())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert (await connection.delete()).status == 202
    ended = await asyncio.wait_for(waiting, 2)
    assert (ended.status, ended.body) == (204, b"")
    gone = await connection.poll()
    assert (gone.status, gone.body) == (404, NOT_FOUND)


async def test_protocol_errors_end_an_http_connection_with_a_close_record(http):
    """The Close record reaches the client (in a poll, or as an event), then the transport ends; POSTs are 404."""
    close = "Connection closed with an error. {}"
    too_large = "MessageTooLargeError: The maximum message size of 32768B was exceeded."
    # MessagePack over long polling: a length prefix declaring 2 GB.
    binary = await start_long_polling(http, handshake=MSGPACK_HANDSHAKE)
    assert (await binary.post(b"\xff\xff\xff\xff\x07\x91")).status == 200
    reply = await binary.poll()
    assert (reply.status, reply.body) == (200, packed([7, close.format(too_large), True]))
    assert (await binary.poll()).status == 204
    assert (await binary.post(packed([6]))).status == 404
    # JSON over long polling: a record over MAX_MESSAGE_SIZE (no separator needed to know).
    text = await start_long_polling(http)
    assert (await text.post("x" * 40_000)).status == 200
    reply = await text.poll()
    assert records(reply.body) == [{"type": 7, "error": close.format(too_large), "allowReconnect": True}]
    assert (await text.poll()).status == 204
    # JSON over Server-Sent Events: an invocation whose target is a number.
    async with contextlib.AsyncExitStack() as stack:
        stream, sender = await open_event_stream(http, stack)
        assert (await sender.post('{"type":1,"target":5,"arguments":[]}' + RS)).status == 200
        assert await stream.message() == {
            "type": 7,
            "error": close.format("ProtocolError: Property 'target' has the wrong type."),
            "allowReconnect": True,
        }
        assert await stream.message() is None
    assert (await refused_once_ended(sender)).status == 404


async def test_a_poll_the_client_abandons_loses_nothing(http):
    """A poll whose client went away takes nothing from the queue: the next poll gets what came meanwhile."""
    connection = await start_long_polling(http)
    abandoned = asyncio.ensure_future(connection.poll())
    await asyncio.sleep(0.3)
    abandoned.cancel()  # aiohttp closes the request's TCP connection
    with contextlib.suppress(asyncio.CancelledError):
        await abandoned
    await asyncio.sleep(0.3)  # the server sees the disconnect
    assert (await connection.post(invocation("Echo", "kept", invocation_id="3"))).status == 200
    reply = await connection.poll()
    assert records(reply.body) == [{"type": 3, "invocationId": "3", "result": "kept"}]
    assert (await connection.delete()).status == 202


async def test_long_polling_with_messagepack(http):
    """LongPolling offers Binary: MessagePack frames go in POST bodies and come back in polls."""
    connection = await start_long_polling(http, handshake=MSGPACK_HANDSHAKE)
    posted = await connection.post(packed([1, {}, "1", "Echo", [{"b": b"\x00\xff", "n": -1}]]))
    assert posted.status == 200
    reply = await connection.poll()
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.body == packed([3, {}, "1", 3, {"b": b"\x00\xff", "n": -1}])
    assert (await connection.delete()).status == 202


async def test_requests_without_an_id_are_400(http):
    for method, headers in (("GET", {}), ("GET", {"Accept": "text/event-stream"}), ("POST", {}), ("DELETE", {})):
        for query in ("", "id=", "_=123"):
            reply = await http.request(method, query=query, headers=headers, data=b"x" if method == "POST" else None)
            assert (reply.status, reply.body) == (400, ID_REQUIRED), (method, headers, query)


async def test_unknown_forged_and_public_ids_are_404(http, live_users):
    body = await http.negotiate()
    ids = [
        "AAAAAAAAAAAAAAAAAAAAAA",
        "not-a-token",
        body["connectionToken"] + "x",  # tampered
        body["connectionToken"][:-1],
        body["connectionId"],  # the public id is not a credential
    ]
    for bad in ids:
        for method, headers in (("GET", {}), ("GET", {"Accept": "text/event-stream"}), ("POST", {}), ("DELETE", {})):
            reply = await http.request(
                method, query=f"id={bad}", headers=headers, data=b"{}" if method == "POST" else None
            )
            assert (reply.status, reply.body) == (404, NOT_FOUND), (bad, method, headers)
    # None of it touched the real token.
    connection = LongPolling(http, body["connectionToken"])
    await connection.start()
    assert (await connection.delete()).status == 202


async def test_another_users_token_is_404_and_leaves_the_connection_alone(http, live_users):
    alice = {"Cookie": live_users["alice"]}
    token = (await http.negotiate(headers=alice))["connectionToken"]
    as_bob = LongPolling(http, token, headers={"Cookie": live_users["bob"]})
    anonymous = LongPolling(http, token)
    for intruder in (as_bob, anonymous):  # before alice started: the first poll must not claim it
        reply = await intruder.poll()
        assert (reply.status, reply.body) == (404, NOT_FOUND)
    connection = LongPolling(http, token, headers=alice)
    await connection.start()
    for intruder in (as_bob, anonymous):
        for reply in (
            await intruder.poll(),
            await intruder.post(invocation("SendToCaller", "stolen")),
            await intruder.delete(),
        ):
            assert (reply.status, reply.body) == (404, NOT_FOUND)
        sse = await http.request(
            "GET", query=f"id={token}", headers={"Accept": "text/event-stream", **intruder.headers}
        )
        assert (sse.status, sse.body) == (404, NOT_FOUND)
    assert (await connection.invoke("GetUserIdentifier"))["result"] == "alice"
    assert (await connection.delete()).status == 202


async def test_an_event_stream_on_a_long_polling_connection_is_400(http):
    connection = await start_long_polling(http)
    reply = await http.request("GET", query=f"id={connection.token}", headers={"Accept": "text/event-stream"})
    assert (reply.status, reply.body) == (400, MID_CONNECTION)
    assert (await connection.invoke("Echo", "unharmed"))["result"] == "unharmed"
    assert (await connection.delete()).status == 202


async def test_a_post_over_the_body_limit_is_413(http):
    from signalr_groups.server.http_connections import post_body_limit

    limit = post_body_limit()  # the session server runs the default settings, as this process
    assert limit == 1024 * 1024
    connection = await start_long_polling(http)
    too_big = await connection.post(b"x" * (limit + 1))
    assert (too_big.status, too_big.body) == (413, b"The request body is too large.")
    # Nothing of it reached the connection: it works on.
    assert (await connection.invoke("Echo", "after 413"))["result"] == "after 413"
    assert (await connection.delete()).status == 202


async def test_other_methods_are_405(http):
    token = (await http.negotiate())["connectionToken"]
    for method in ("PUT", "PATCH"):
        for query in (f"id={token}", ""):
            reply = await http.request(method, query=query, data=b"{}")
            assert reply.status == 405, (method, query)
            assert reply.headers["Allow"] == "GET, POST, DELETE"
    # Still a fresh token.
    connection = LongPolling(http, token)
    await connection.start()
    assert (await connection.delete()).status == 202


async def test_a_poll_with_nothing_to_send_waits_for_the_poll_timeout(fast_http):
    """Polls that keep coming keep the connection alive past DISCONNECT_TIMEOUT; none carries a Ping."""
    connection = await start_long_polling(fast_http)
    for _ in range(2):
        started = time.monotonic()
        reply = await connection.poll()
        elapsed = time.monotonic() - started
        assert (reply.status, reply.body) == (200, b"")
        assert reply.headers["Content-Type"] == "application/octet-stream"
        assert FAST["LONG_POLLING_POLL_TIMEOUT"] - 0.2 <= elapsed < FAST["LONG_POLLING_POLL_TIMEOUT"] + 2, elapsed
    assert (await connection.invoke("Echo", "alive"))["result"] == "alive"
    assert (await connection.delete()).status == 202


async def test_a_client_that_stops_polling_is_disconnected(fast_http, rooms):
    """After DISCONNECT_TIMEOUT without a poll the connection ends: its room hears it leave, its POST is 404."""
    server = fast_http.server
    alice = await start_long_polling(fast_http, "chatHub", cookie=rooms["alice"])
    assert (await alice.invoke("JoinRoom", "lobby"))["result"] == {"missed": [], "gap": False}
    bob = await ws_json(server, "chatHub", rooms["bob"])
    try:
        await bob.send(invocation("JoinRoom", "lobby", invocation_id="1"))
        await ws_wait_for(bob, lambda m: m.get("type") == 1 and m["arguments"][1] == ["alice", "bob"])
        last_poll = time.monotonic()  # alice's invoke() ended with a poll; she never polls again
        left = await ws_wait_for(
            bob, lambda m: m.get("type") == 1 and m["target"] == "Presence", timeout=FAST["DISCONNECT_TIMEOUT"] + 6
        )
        waited = time.monotonic() - last_poll
        assert left["arguments"][:2] == ["lobby", ["bob"]]
        assert FAST["DISCONNECT_TIMEOUT"] - 0.5 <= waited, waited
        late = await alice.post(invocation("SendToRoom", "lobby", "ghost", invocation_id="2"))
        assert (late.status, late.body) == (404, NOT_FOUND)
        # Polls now end the transport: what was still queued (at most once), then 204 (.NET: 404 at once).
        statuses = [(await alice.poll()).status for _ in range(2)]
        assert statuses in ([200, 204], [204, 404]), statuses
    finally:
        await bob.close()


# ================================================================ Server-Sent Events


async def test_server_sent_events_round_trip(http):
    token = (await http.negotiate())["connectionToken"]
    async with http.event_stream(query=f"id={token}") as stream:
        response = stream.response
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache,no-store"
        assert response.headers["Pragma"] == "no-cache"
        assert await stream.preamble() == b":\r\n"
        sender = LongPolling(http, token)
        posted = await sender.post(JSON_HANDSHAKE)
        assert (posted.status, posted.body) == (200, b"")
        assert await stream.event() == "{}" + RS
        # One event per record, even for a value with line breaks (JSON escapes them).
        assert (await sse_invoke(stream, sender, "Echo", "two\nlines\r\n"))["result"] == "two\nlines\r\n"
        assert (await sender.post(invocation("SendToCaller", "pushed"))).status == 200
        assert await stream.message() == {"type": 1, "target": "Receive", "arguments": ["caller", "pushed"]}

        second = await http.request("GET", query=f"id={token}", headers={"Accept": "text/event-stream"})
        assert second.status == 409
        poll = await http.request("GET", query=f"id={token}")
        assert (poll.status, poll.body) == (400, MID_CONNECTION)
        delete = await sender.delete()
        assert (delete.status, delete.body) == (400, b"Cannot terminate this connection using the DELETE endpoint.")
        assert (await sse_invoke(stream, sender, "Echo", "unharmed"))["result"] == "unharmed"

        # A Close from the client ends the stream.
        assert (await sender.post('{"type":7}' + RS)).status == 200
        assert await stream.message() is None
    late = await refused_once_ended(sender)
    assert (late.status, late.body) == (404, NOT_FOUND)
    # The token served its one connection.
    for headers in ({"Accept": "text/event-stream"}, {}):
        reused = await http.request("GET", query=f"id={token}", headers=headers)
        assert (reused.status, reused.body) == (404, NOT_FOUND)


async def test_messagepack_over_server_sent_events_is_refused_at_the_handshake(http):
    token = (await http.negotiate())["connectionToken"]
    async with http.event_stream(query=f"id={token}") as stream:
        assert stream.response.status == 200
        assert await stream.preamble() == b":\r\n"
        sender = LongPolling(http, token)
        assert (await sender.post(MSGPACK_HANDSHAKE)).status == 200
        assert (
            await stream.event()
            == json.dumps(
                {
                    "error": "Cannot use the 'messagepack' protocol on the current transport. "
                    "The transport does not support 'Binary' transfer format."
                },
                separators=(",", ":"),
            )
            + RS
        )
        assert await stream.event() is None  # then the stream ends
    assert (await refused_once_ended(sender)).status == 404


async def test_server_sent_events_keep_alive_and_client_timeout(fast_http):
    """Pings every KEEP_ALIVE_INTERVAL; a client that pinged and then fell silent is closed after CLIENT_TIMEOUT.

    A client that never pinged is never timed out (as .NET: the first Ping starts the check).
    """
    async with contextlib.AsyncExitStack() as stack:
        pinger, pinger_sender = await open_event_stream(fast_http, stack)
        quiet, quiet_sender = await open_event_stream(fast_http, stack)
        assert (await pinger_sender.post('{"type":6}' + RS)).status == 200
        silent_since = time.monotonic()
        pings = 0
        while (message := await pinger.message(skip_pings=False)) == {"type": 6}:
            pings += 1
        waited = time.monotonic() - silent_since
        assert message == {
            "type": 7,
            "error": f"{GENERIC_CLOSE} The client sent nothing for {FAST['CLIENT_TIMEOUT']} seconds.",
            "allowReconnect": True,
        }
        assert FAST["CLIENT_TIMEOUT"] - 0.5 <= waited < FAST["CLIENT_TIMEOUT"] + 3, waited
        assert pings >= 1, pings  # (the keep-alive check runs on a 1 s tick: a ping every 1 to 2 s)
        assert await pinger.message() is None  # the stream ended
        assert (await refused_once_ended(pinger_sender)).status == 404

        # The one that never pinged got its pings all along (about 4 s of them), and is still open.
        quiet_pings = 0
        with contextlib.suppress(TimeoutError):
            while await quiet.message(0.5, skip_pings=False) == {"type": 6}:
                quiet_pings += 1
        assert quiet_pings >= 2, quiet_pings
        assert (await sse_invoke(quiet, quiet_sender, "Echo", "still open"))["result"] == "still open"


async def test_closing_the_event_stream_ends_the_connection(fast_http, rooms):
    server = fast_http.server
    async with contextlib.AsyncExitStack() as stack:
        stream, alice = await open_event_stream(fast_http, stack, "chatHub", cookie=rooms["alice"])
        assert (await sse_invoke(stream, alice, "JoinRoom", "lobby"))["result"] == {"missed": [], "gap": False}
        bob = await ws_json(server, "chatHub", rooms["bob"])
        stack.push_async_callback(bob.close)
        await bob.send(invocation("JoinRoom", "lobby", invocation_id="1"))
        await ws_wait_for(bob, lambda m: m.get("type") == 1 and m["arguments"][1] == ["alice", "bob"])
        stream.response.close()  # alice's browser tab closes
        left = await ws_wait_for(bob, lambda m: m.get("type") == 1 and m["target"] == "Presence", timeout=5)
        assert left["arguments"][:2] == ["lobby", ["bob"]]
        late = await refused_once_ended(alice)
        assert (late.status, late.body) == (404, NOT_FOUND)


# ================================================================ access tokens in the query string


async def _access_token(username: str) -> str:
    from django.contrib.auth import get_user_model

    from signalr_groups.auth.access_tokens import issue_access_token

    user = await sync_to_async(get_user_model().objects.get)(username=username)
    return str(await sync_to_async(issue_access_token)(user))


async def _event_stream_with_an_access_token(http: Http, access_token: str) -> str:
    """As the JS client: the token in the event stream's query string, in a header on the POSTs; the connection token."""
    bearer = {"Authorization": f"Bearer {access_token}"}
    token = str((await http.negotiate("protected", headers=bearer))["connectionToken"])
    async with http.event_stream("protected", query=f"id={token}&access_token={access_token}") as stream:
        assert stream.response.status == 200
        assert await stream.preamble() == b":\r\n"
        sender = LongPolling(http, token, "protected", bearer)
        assert (await sender.post(JSON_HANDSHAKE)).status == 200
        assert await stream.event() == "{}" + RS
        assert (await sse_invoke(stream, sender, "Whoami"))["result"] == "alice"
        assert (await sender.post('{"type":7}' + RS)).status == 200
        assert await stream.message() is None  # the server ended the response (its access line is written now)
    return token


async def test_an_access_token_in_the_query_string_authenticates_an_event_stream(fast_http, live_users):
    access_token = await _access_token("alice")
    await _event_stream_with_an_access_token(fast_http, access_token)
    # The protected hub refuses an anonymous stream, and a forged token is 401 (never downgraded to anonymous).
    token = (await fast_http.negotiate())["connectionToken"]
    sse = {"Accept": "text/event-stream"}
    forged = await fast_http.request("GET", "protected", query=f"id={token}&access_token={access_token}x", headers=sse)
    assert (forged.status, forged.body) == (401, b"Invalid or expired access token.")


async def test_tokens_never_reach_the_server_log(fast_http, live_users, request):
    """Access tokens and connection tokens travel in query strings: the server's request log must not show them.

    uvicorn logs through the ``logging`` module, where the app's RedactTokensFilter sits; daphne writes
    its access log straight to stdout (``daphne.access.AccessLogGenerator``), whose writer the app wraps.
    """
    server = fast_http.server
    access_token = await _access_token("alice")
    sse_token = await _event_stream_with_an_access_token(fast_http, access_token)
    polling = await start_long_polling(fast_http)
    assert (await polling.delete()).status == 202
    log = ""
    for _ in range(100):  # the server writes its access lines as each response ends
        log = server.log()
        if log.count("/protected?id=") >= 3 and log.count("/interop?id=") >= 4:
            break
        await asyncio.sleep(0.05)
    lines = [line for line in log.splitlines() if "?id=" in line]
    assert len(lines) >= 7, log[-3000:]
    leaked = [line for line in lines if access_token in line or sse_token in line or polling.token in line]
    assert not leaked, leaked
    assert "access_token=[redacted]" in log and "id=[redacted]" in log


# ================================================================ MessagePack over WebSockets


async def test_messagepack_invocations_over_websockets(fast_server):
    async with MessagePackSocket.open(fast_server) as socket:
        assert await socket.invoke("Echo", "hi") == [3, {}, "1", 3, "hi"]
        assert await socket.invoke("Add", 2, 40, invocation_id="2") == [3, {}, "2", 3, 42]
        assert await socket.invoke("Nothing", invocation_id="3") == [3, {}, "3", 3, None]  # as JSON's "result":null
        error = await socket.invoke("Fail", "nope", invocation_id="4")
        assert error[:4] == [3, {}, "4", 1] and "nope" in error[4]
        # Several messages in one frame, and one message across frames (boundaries mean nothing).
        both = packed([1, {}, "5", "Echo", ["a"]]) + packed([1, {}, "6", "Echo", ["b"], []])
        await socket.ws.send(both)
        assert [await socket.message(), await socket.message()] == [[3, {}, "5", 3, "a"], [3, {}, "6", 3, "b"]]
        split = packed([1, {}, "7", "Echo", ["x" * 1000]])
        for start in range(0, len(split), 300):
            await socket.ws.send(split[start : start + 300])
        assert await socket.message() == [3, {}, "7", 3, "x" * 1000]
        # An unknown message type is ignored (for future protocol versions); the connection goes on.
        await socket.ws.send(packed([99, {}, "whatever"]))
        assert await socket.invoke("Echo", "after 99", invocation_id="8") == [3, {}, "8", 3, "after 99"]


TRUNCATED = "ProtocolError: Error reading MessagePack: the message is truncated."
TYPE = "ProtocolError: Property '{}' has the wrong type."
MISSING = "ProtocolError: Missing required property '{}'."


def _hostile_records(max_size: int) -> dict[str, tuple[bytes, str]]:
    """Records that break the MessagePack hub protocol, each with the reason its Close message gives."""
    pack = msgpack.packb
    too_large = f"MessageTooLargeError: The maximum message size of {max_size}B was exceeded."
    over_2gb = "ProtocolError: Messages over 2GB in size are not supported."
    too_deep = "ProtocolError: The message is nested too deeply."
    not_array = "ProtocolError: A hub message must be a MessagePack array."
    deep: Any = 1
    for _ in range(40):  # past the server's 32 levels, far below the size limit
        deep = [deep]
    return {
        "truncated array": (framed(b"\x95\x01\x80\xa1"), TRUNCATED),  # [1, {}, …]: 2 of 5 elements, a cut string
        "truncated string": (framed(pack([1, {}, "1", "Echo", ["hello"]])[:-3]), TRUNCATED),
        "prefix declaring 2 GB": (b"\xff\xff\xff\xff\x07\x91\x06", too_large),
        "prefix over 2 GB": (b"\xff\xff\xff\xff\x0f\x91\x06", over_2gb),
        "prefix of 6 bytes": (b"\x80\x80\x80\x80\x80\x01", over_2gb),
        "zero length": (b"\x00", "ProtocolError: A message of length zero was received."),
        "over the message size": (packed([1, {}, "1", "Echo", ["x" * max_size]]), too_large),
        "100k nested arrays": (framed(b"\x91" * 100_000 + b"\xc0"), too_deep),
        "nesting past the depth limit": (packed([1, {}, "1", "Echo", [deep]]), too_deep),
        "array32 of 4 billion": (framed(b"\xdd\xff\xff\xff\xff\x01\x02\x03"), TRUNCATED),
        "map32 of 4 billion": (framed(b"\x95\x01\xdf\xff\xff\xff\xff\xa1a\xa1b"), TRUNCATED),
        "str32 of 4 GB": (framed(b"\x95\x01\x80\xc0\xdb\xff\xff\xff\xff\x45"), TRUNCATED),
        "bin32 of 4 GB": (framed(b"\x95\x01\x80\xc0\xa4Echo\x91\xc6\xff\xff\xff\xff\x00"), TRUNCATED),
        # msgpack preallocates a list per array header: unchecked, these 5 KB would cost it gigabytes.
        "nested array32 headers": (framed(b"\xdd\x00\x00\xff\xff" * 1000), TRUNCATED),
        "non-string map key": (
            packed([1, {1: "a"}, "1", "Echo", ["x"]]),
            "ProtocolError: Error reading MessagePack: map keys must be strings.",
        ),
        "non-string header value": (
            packed([1, {"a": 1}, "1", "Echo", ["x"]]),
            "ProtocolError: Property 'headers' must be a map of strings to strings.",
        ),
        "map as message": (packed({"type": 1}), not_array),
        "integer as message": (packed(1), not_array),
        "empty array": (packed([]), MISSING.format("type")),
        "type as a string": (packed(["1", {}, "1", "Echo", []]), "ProtocolError: Property 'type' must be an integer."),
        "invocation of two elements": (packed([1, {}]), MISSING.format("invocationId")),
        "invocation without target": (packed([1, {}, "1"]), MISSING.format("target")),
        "target as integer": (packed([1, {}, "1", 5, []]), TYPE.format("target")),
        "arguments as string": (packed([1, {}, "1", "Echo", "x"]), TYPE.format("arguments")),
        "stream ids not strings": (
            packed([1, {}, "1", "Echo", [], [1]]),
            "ProtocolError: Property 'streamIds' must be a list of strings.",
        ),
        "invocation id too long": (
            packed([1, {}, "x" * 300, "Echo", []]),
            "ProtocolError: Invocation ID is longer than 256 characters.",
        ),
        "completion of an unknown id": (
            packed([3, {}, "zz", 2]),
            "ProtocolError: Received a message for unknown invocation ID 'zz'.",
        ),
        "invalid result kind": (packed([3, {}, "zz", 9]), "ProtocolError: Invalid invocation result kind."),
        "cancel without id": (packed([5, {}]), MISSING.format("invocationId")),
        "close with an integer error": (packed([7, 5]), TYPE.format("error")),
        "byte 0xc1": (
            framed(b"\xc1"),
            "ProtocolError: Error reading MessagePack: the byte 0xc1 is not a valid format.",
        ),
        "unknown extension": (
            framed(b"\x95\x01\x80\xc0\xa4Echo\x91\xd4\x05\x00"),
            "ProtocolError: Error reading MessagePack: extension type 5 is not supported.",
        ),
        "invalid utf-8": (
            framed(b"\x95\x01\x80\xc0\xa2\xff\xfe\x90"),
            "ProtocolError: Error reading MessagePack: 'utf-8' codec can't decode byte 0xff",
        ),
        "bytes after the message": (
            framed(b"\x91\x06\x00"),
            "ProtocolError: Error reading MessagePack: there are bytes after the message.",
        ),
    }


async def test_hostile_messagepack_records_get_a_close_message_and_memory_stays_bounded(fast_server):
    """Each record on a live connection: a Close message with the reason, reconnect allowed; then a fresh
    connection works, and over all of them the server's RSS grows less than 50 MB."""
    async with MessagePackSocket.open(fast_server) as warm_up:  # the baseline includes a connection's imports
        assert await warm_up.invoke("Echo", "x" * 30_000) == [3, {}, "1", 3, "x" * 30_000]
    wrong: dict[str, list[Any]] = {}
    with PeakRss(fast_server.process.pid) as rss:
        for name, (record, reason) in _hostile_records(FAST["MAX_MESSAGE_SIZE"]).items():
            async with MessagePackSocket.open(fast_server) as socket:
                assert await socket.invoke("Echo", "before", invocation_id="0") == [3, {}, "0", 3, "before"]
                await socket.ws.send(record)
                close = await socket.closed_with()
            expected = f"{GENERIC_CLOSE} {reason}"
            if not (len(close) == 3 and close[0] == 7 and str(close[1]).startswith(expected) and close[2] is True):
                wrong[name] = close
            async with MessagePackSocket.open(fast_server) as fresh:  # the server is fine
                assert await fresh.invoke("Echo", name) == [3, {}, "1", 3, name], name
    assert not wrong, wrong
    assert rss.growth < 50, f"RSS grew {rss.growth:.0f} MB"
    assert fast_server.process.poll() is None
    assert "Traceback" not in fast_server.log()
