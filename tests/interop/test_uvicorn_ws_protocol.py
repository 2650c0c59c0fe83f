"""The lean uvicorn WebSocket protocol (``--ws signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol``).

Against the test project's hubs, a real uvicorn process (``ServerProcess`` kind ``uvicorn-lean``): the official
client, groups, 1 MB messages, clients that flood or stop reading (the hostile-client tests, re-run here), close
codes, denial statuses, pings both ways. In-process, against plain ASGI apps: the same ASGI events and the same
wire as uvicorn's own ``websockets-sansio`` protocol, and what an open connection no longer keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import Protocol
from websockets.typing import Subprotocol

from signalr_groups.server import uvicorn_ws
from signalr_groups.server.uvicorn_socket import uvicorn_flow_control
from signalr_groups.server.uvicorn_ws import SignalRWebSocketProtocol
from tests.interop import test_hostile_clients as hostile
from tests.interop import test_uvicorn as stock_uvicorn
from tests.live import NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(120)
RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


def _server(log: Path, kind: str, *flags: str) -> ServerProcess:
    return ServerProcess(log, str(settings.DATABASES["default"]["NAME"]), server=kind, extra_args=list(flags))


@pytest.fixture(scope="module")
def lean(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """The lean protocol, with uvicorn's own pings every 0.5 s (2 s timeout): its keep-alive runs in every test."""
    server = _server(tmp_path_factory.mktemp("lean") / "uvicorn.log", "uvicorn-lean", "--ws-ping-interval", "0.5",
                     "--ws-ping-timeout", "2")  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stock(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """uvicorn's own protocol, same flags: what the lean one must behave like."""
    server = _server(tmp_path_factory.mktemp("stock") / "uvicorn.log", "uvicorn", "--ws-ping-interval", "0.5",
                     "--ws-ping-timeout", "2")  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def deployed(django_db_setup, tmp_path) -> Iterator[ServerProcess]:
    """A fresh lean server per test, without uvicorn pings as deployed: for the memory bounds (a fresh baseline)."""
    server = _server(tmp_path / "server.log", "uvicorn-lean", "--ws-ping-interval", "0")
    yield server
    server.stop()


async def _hub(server: ServerProcess, **options: Any) -> Any:
    ws = await connect(server.ws_url + "/interop", **options)
    await ws.send(HANDSHAKE)
    assert await ws.recv() == "{}" + RS
    return ws


async def _result(ws: Any, invocation_id: str) -> Any:
    """The completion of ``invocation_id`` (other records, pings of the hub protocol, are skipped)."""
    while True:
        for record in str(await asyncio.wait_for(ws.recv(), 15)).split(RS)[:-1]:
            message = json.loads(record)
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                return message.get("result", message.get("error"))


def _invoke(target: str, *arguments: object, invocation_id: str = "1", kind: int = 1) -> str:
    return (
        json.dumps(
            {"type": kind, "invocationId": invocation_id, "target": target, "arguments": list(arguments)},
            ensure_ascii=False,
        )
        + RS
    )


# -- the hub under a real uvicorn ------------------------------------------------------------------------------------


def test_official_client_echo_and_group_send(lean, live_users, node: NodeDriver):
    url = lean.http_url + "/interop"
    node.connect("alice", url, cookie=live_users["alice"])
    node.connect("bob", url, cookie=live_users["bob"])
    assert node.invoke("alice", "Echo", {"a": [1, "é"]}) == {"a": [1, "é"]}
    node.invoke("alice", "JoinGroup", "lean")
    node.invoke("bob", "SendToGroup", "lean", "hello from the lean protocol")
    node.wait_for("alice", lambda events: received(events) == [["group", "hello from the lean protocol"]])


async def test_a_group_send_reaches_each_member_once(lean):
    members = [await _hub(lean) for _ in range(30)]
    try:
        for index, ws in enumerate(members):
            await ws.send(_invoke("JoinGroup", "g30", invocation_id=str(index)))
            assert await _result(ws, str(index)) is True
        await members[0].send(_invoke("SendToGroup", "g30", "to all 30", invocation_id="send"))
        for ws in members:
            record = json.loads(str(await asyncio.wait_for(ws.recv(), 15)).split(RS)[0])
            assert record == {"type": 1, "target": "Receive", "arguments": ["group", "to all 30"]}
    finally:
        for ws in members:
            await ws.close()


async def _large_frames(server: ServerProcess) -> list[Any]:
    seen: list[Any] = []
    ws = await _hub(server, max_size=None)
    try:
        await ws.send(_invoke("Blobs", 3, 1_000_000, invocation_id="s", kind=4))  # three frames of 1 MB to the client
        items: list[str] = []
        while len(items) < 3:
            records = str(await asyncio.wait_for(ws.recv(), 15)).split(RS)[:-1]
            items += [json.loads(record)["item"] for record in records if json.loads(record)["type"] == 2]
        seen.append([(item[:2], len(item)) for item in items])
        record = _invoke("Echo", "é" * 10_000, invocation_id="fragments")  # 30 KB in 4 continuation frames
        await ws.send([record[i : i + 3000] for i in range(0, len(record), 3000)])
        seen.append(await _result(ws, "fragments") == "é" * 10_000)
        await ws.send(_invoke("Echo", "x" * 999_900))  # 1 MB: uvicorn takes it (< 1 MiB), the hub refuses it
        closing = ""
        with contextlib.suppress(ConnectionClosed):
            while True:
                closing += str(await asyncio.wait_for(ws.recv(), 15))
        seen.append((closing, ws.close_code))
    finally:
        await ws.close()
    return seen


async def test_one_megabyte_frames_both_ways_and_fragments(lean, stock):
    seen = await _large_frames(lean)
    assert seen == await _large_frames(stock)
    assert seen[0] == [("0:", 1_000_002), ("1:", 1_000_002), ("2:", 1_000_002)] and seen[1] is True
    assert '"type":7' in seen[2][0] and seen[2][1] == 1000  # the hub's own size limit: a Close message, not a 1009


async def test_refusals_carry_real_status_codes(lean):
    await stock_uvicorn.test_refusals_carry_real_status_codes_under_uvicorn(lean)


@pytest.mark.parametrize("kind", ["stock", "lean"])
async def test_close_codes(request, kind):
    server = request.getfixturevalue(kind)
    ws = await _hub(server)
    await ws.close(4000, "bye")  # the server echoes the client's close frame
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    ws = await _hub(server)
    await ws.send(_invoke("AbortMe"))
    frames = ""
    with contextlib.suppress(ConnectionClosed):
        while True:
            frames += str(await asyncio.wait_for(ws.recv(), 15))
    assert '"type":7' in frames
    assert (ws.close_code, ws.close_reason) == (1000, "")


@pytest.mark.parametrize("kind", ["stock", "lean"])
async def test_client_pings_are_answered(request, kind):
    ws = await _hub(request.getfixturevalue(kind))
    try:
        pong = await ws.ping(b"lean")
        assert await asyncio.wait_for(pong, 5) >= 0
    finally:
        await ws.close()


def _frames(sock: socket.socket, within: float) -> Iterator[tuple[int, bytes]]:
    """The server's frames (opcode, payload) as they come, for ``within`` seconds or until the socket ends."""
    buffer, deadline = b"", time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        while len(buffer) >= 4:
            size, offset = buffer[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buffer[2:4], "big"), 4
            assert size < 65536, "the hub sends no such frames here"
            if len(buffer) < offset + size:
                break
            yield buffer[0] & 0x0F, buffer[offset : offset + size]
            buffer = buffer[offset + size :]
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk


def test_uvicorn_pings_and_closes_a_client_that_never_answers(lean):
    answering, _ = hostile._raw_client(lean.port)
    silent, _ = hostile._raw_client(lean.port)
    try:
        pings = 0
        for opcode, payload in _frames(answering, within=3):
            if opcode == 0x9:
                pings += 1
                answering.sendall(hostile._raw_frame(0xA, payload, fin=True))
        assert pings >= 3
        answering.sendall(hostile._masked(_invoke("Echo", "still open", invocation_id="9")))
        assert any(b'"still open"' in payload for _, payload in _frames(answering, within=5))
        closes = [payload for opcode, payload in _frames(silent, within=6) if opcode == 0x8]
        assert closes and int.from_bytes(closes[0][:2], "big") == 1011  # keepalive ping timeout
    finally:
        answering.close()
        silent.close()


async def test_a_reader_that_pauses_gets_the_whole_stream_and_memory_stays_bounded(deployed):
    """40 MB streamed to a client that reads nothing for 3 s: uvicorn's send() waits (writable), nothing is lost."""
    ws = await _hub(deployed, max_size=None, max_queue=1)
    try:
        with hostile.PeakRss(deployed.process.pid) as rss:
            await ws.send(_invoke("Blobs", 400, 100_000, invocation_id="s", kind=4))
            await asyncio.sleep(3)
        items: list[str] = []
        while len(items) < 400:
            for record in str(await asyncio.wait_for(ws.recv(), 15)).split(RS)[:-1]:
                message = json.loads(record)
                if message["type"] == 2:
                    items.append(message["item"])
        assert [item.split(":")[0] for item in items] == [str(n) for n in range(400)]
        assert await _result(ws, "s") is None
        assert rss.growth < 20, f"RSS grew {rss.growth:.0f} MB while 40 MB waited for a paused reader"
    finally:
        await ws.close()


async def test_a_flooding_client_is_held_back(deployed):
    await hostile.test_a_flooding_client_is_held_back_and_memory_stays_bounded(deployed)


async def test_a_client_that_stops_reading_is_closed(deployed):
    await hostile.test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded(deployed)


def test_a_client_that_reads_late_still_gets_the_close_message(deployed):
    hostile.test_a_client_that_reads_late_still_gets_the_close_message(deployed)


def test_unfinished_fragmented_messages_are_refused(deployed):
    hostile.test_unfinished_fragmented_messages_are_refused_past_a_mebibyte(deployed)


@hostile.FRAME_VIOLATIONS
def test_frame_level_violations(deployed, frame, code):
    hostile.test_frame_level_violations_are_answered_with_their_close_code(deployed, frame, code)


def test_no_application_errors_were_logged(lean):
    assert "Exception in ASGI application" not in lean.log()


# -- in-process, next to uvicorn's own protocol ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serving(app: Any, ws_class: type) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=ws_class, lifespan="off", log_level="critical",
                            ws_per_message_deflate=False, ws_ping_interval=None, ws_max_size=2 * 1024 * 1024)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield server.servers[0].sockets[0].getsockname()[1], server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


class _App:
    """An ASGI app whose every path is a behaviour; ``events`` records what it received, per path."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.sent = 0
        self.protocols: list[Any] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        self.protocols.append(getattr(send, "__self__", None))
        assert (await receive())["type"] == "websocket.connect"
        if path == "/deny":
            await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"no")]})
            await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"pe"})
            return
        if path == "/reject":
            await send({"type": "websocket.close"})
            return
        if path == "/crash":
            raise RuntimeError("before accept")
        subprotocol = "chat" if "chat" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": [(b"x-lean", b"1")]})
        if path == "/flood":
            for _ in range(300):
                await send({"type": "websocket.send", "bytes": b"f" * 65536})
                self.sent += 1
            await send({"type": "websocket.close", "code": 1000})
        while True:
            message = await receive()
            self.events.append((path, message["type"], message.get("code"), message.get("reason"),
                                message.get("text"), message.get("bytes")))  # fmt: skip
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "done"})
            elif message.get("text") == "slow":
                await asyncio.sleep(0.3)  # meanwhile the client sends more: uvicorn stops reading, then resumes
            else:
                await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def _transcript(ws_class: type) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """One scripted session of every behaviour: what the client saw, and what the app received."""
    app, seen = _App(), list[Any]()
    async with _serving(app, ws_class) as (port, server):
        base = f"ws://127.0.0.1:{port}"
        async with connect(base + "/echo", subprotocols=[Subprotocol("chat")], max_size=None) as ws:
            assert ws.response is not None
            seen += [ws.subprotocol, ws.response.headers["x-lean"]]
            for message in ("hi", b"\x00\x01", "é" * 600_000, ["a", "b", "c"]):
                await ws.send(message)
                seen.append(await ws.recv())
            seen.append(await asyncio.wait_for(await ws.ping(), 5) >= 0)
            await ws.send("slow")
            for number in range(200):
                await ws.send(str(number))
            seen.append([await ws.recv() for _ in range(200)] == [str(number) for number in range(200)])
            await ws.send("close")
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
            seen.append((ws.close_code, ws.close_reason))
        async with connect(base + "/echo") as ws:
            await ws.close(4000, "bye")
            seen.append((ws.close_code, ws.close_reason))
        for path in ("/deny", "/reject", "/crash"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base + path):
                    pass
            response = refused.value.response
            seen.append((path, response.status_code, response.headers.get("x-why"), response.body))
        async with connect(base + "/flood", max_queue=1) as ws:
            await asyncio.sleep(0.5)
            seen.append(("blocked", app.sent < 300))
            frames = [await ws.recv() for _ in range(300)]
            seen.append(("flood", len(frames), all(frame == b"f" * 65536 for frame in frames), app.sent))
        ws = await connect(base + "/echo")
        server.should_exit = True  # uvicorn's shutdown(): close 1012 to the client, websocket.disconnect to the app
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        seen.append(("shutdown", ws.close_code))
    return seen, app.events


async def test_same_asgi_events_and_wire_as_uvicorns_own_protocol():
    lean_seen, lean_events = await _transcript(SignalRWebSocketProtocol)
    stock_seen, stock_events = await _transcript(WebSocketsSansIOProtocol)
    assert lean_seen == stock_seen
    assert lean_events == stock_events
    assert lean_seen[-1] == ("shutdown", 1012)
    assert ("/echo", "websocket.disconnect", 4000, "bye", None, None) in lean_events


async def test_an_open_connection_keeps_nothing_of_the_handshake():
    app = _App()
    async with _serving(app, SignalRWebSocketProtocol) as (port, _server):
        url = f"ws://127.0.0.1:{port}/echo"
        async with connect(url, user_agent_header="lean") as ws, connect(url, user_agent_header="lean") as other:
            for client in (ws, other):
                await client.send("hi")
                assert await client.recv() == "hi"
            protocol = app.protocols[0]
            assert uvicorn_flow_control(protocol.send) is not None  # the hub's direct writes still take it
            state: Any = protocol
            assert vars(protocol) == {}  # every attribute in a slot
            assert state.request is None and state.response is None
            assert state.conn.parser.gi_code is Protocol.parse.__code__  # not ServerProtocol.parse, with the request
            inbox, writable = state.queue, state.writable
            assert inbox._items is None and inbox._more_getters is None and not inbox._getter.done()  # app waits
            assert writable.is_set() and writable._waiters is None
            first, second = (dict(p.scope["headers"]) for p in app.protocols[:2])
            assert first.keys() == second.keys() and first[b"user-agent"] == b"lean"
            assert first[b"sec-websocket-key"] != second[b"sec-websocket-key"]
            shared = {name for name in first if first[name] is second[name]}
            assert shared == set(first) - {b"sec-websocket-key"}  # the same pairs, one copy
            assert app.protocols[0].server is app.protocols[1].server


@pytest.mark.parametrize("ws_class", [SignalRWebSocketProtocol, WebSocketsSansIOProtocol], ids=["lean", "stock"])
async def test_the_upgrade_requests_http_protocol_is_freed_without_the_collector(ws_class):
    """uvicorn's httptools protocol that served the upgrade is a cycle (its parser holds its callbacks): the lean
    protocol breaks it, so it is freed at once, not by a collection (which GC_FREEZE_CONNECTIONS may never run on it:
    one frozen mid-handshake would leak, with its socket's transport). uvicorn's own protocol leaves it to the GC."""
    app = _App()
    gc.collect()
    gc.disable()
    try:
        async with _serving(app, ws_class) as (port, _server), connect(f"ws://127.0.0.1:{port}/echo") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await asyncio.sleep(0.05)  # past the loop turn that lets it go
            left = [obj for obj in gc.get_objects() if isinstance(obj, HttpToolsProtocol)]
    finally:
        gc.enable()
    if ws_class is SignalRWebSocketProtocol:
        assert left == []
        assert ws_class.frees_closed_connections is True  # what GC_FREEZE_CONNECTIONS's warning looks for
    else:
        assert len(left) == 1 and left[0].parser is not None  # the cycle the lean protocol breaks


# -- the receive queue and the writable flag, against asyncio's -------------------------------------------------------


async def test_the_inbox_behaves_as_asyncio_queue_with_cancelled_getters():
    async def script(queue: Any, take: Any) -> list[Any]:
        first, second = asyncio.ensure_future(take()), asyncio.ensure_future(take())
        await asyncio.sleep(0)
        queue.put_nowait("m1")  # wakes the first getter...
        first.cancel()  # ...which is cancelled before it runs: the message goes to the second
        queue.put_nowait("m2")
        third = asyncio.ensure_future(take())
        await asyncio.sleep(0.01)
        return [first.cancelled(), second.result(), third.result(), queue.empty()]

    stub = SimpleNamespace(queue=uvicorn_ws._Inbox(), read_paused=False)
    lean = await script(stub.queue, lambda: SignalRWebSocketProtocol.receive(stub))  # type: ignore[arg-type]
    queue: asyncio.Queue[str] = asyncio.Queue()
    assert lean == await script(queue, queue.get) == [True, "m1", "m2", True]
    assert stub.queue._items is None and stub.queue._getter is None and stub.queue._more_getters is None


async def test_writable_waits_while_cleared_and_wakes_every_waiter():
    writable = uvicorn_ws._Writable()
    await asyncio.wait_for(writable.wait(), 1)
    writable.clear()
    waiters = [asyncio.ensure_future(writable.wait()) for _ in range(3)]
    await asyncio.sleep(0.01)
    waiters[0].cancel()
    await asyncio.sleep(0.01)
    assert not any(waiter.done() for waiter in waiters[1:])
    writable.set()
    await asyncio.wait_for(asyncio.gather(*waiters[1:]), 1)
    assert writable.is_set() and writable._waiters is None


def test_other_uvicorn_releases_are_refused_with_the_supported_range():
    with pytest.raises(ImportError, match=r"uvicorn >=0\.52\.4,<0\.55"):
        uvicorn_ws.check_uvicorn("0.55.0")
    with pytest.raises(ImportError, match="protocol changed"):
        uvicorn_ws.check_uvicorn("0.54.0", parent=type("Changed", (), {}))
