"""A client that floods or stops reading cannot grow the server's memory, on daphne and on uvicorn.

Measured from the server process's RSS (``/proc/<pid>/status``), with a margin. daphne reads
every frame into an unbounded queue and buffers every write; the connection's flow control
(``signalr_groups.server.flow``) holds both to a bound there, as uvicorn does by itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(120)

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
#: Growth of the server's RSS we accept under each attack (the attacks below push 100+ MB).
RSS_MARGIN_MB = 60


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = _rss_mb(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> float:
        return self.peak - self.baseline


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request, django_db_setup, tmp_path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server.log", str(settings.DATABASES["default"]["NAME"]), server=request.param)
    yield process
    process.stop()


def _invocation(target: str, *arguments: object, invocation_id: str | None = None) -> str:
    message: dict[str, object] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message) + RS


async def _warm_up(server: ServerProcess) -> None:
    """One ordinary connection first, so that the baseline includes everything a connection loads."""
    async with connect(server.ws_url + "/interop") as ws:
        await ws.send(HANDSHAKE)
        assert await ws.recv() == "{}" + RS
        await ws.send(_invocation("Echo", "x" * 30_000, invocation_id="1"))
        assert '"invocationId":"1"' in str(await ws.recv())


async def test_a_flooding_client_is_held_back_and_memory_stays_bounded(server):
    """~30 KB invocations of a slow method, sent nonstop for 6 s: the server stops reading, not buffering."""
    await _warm_up(server)
    record = _invocation("Slow", "x" * 30_000)
    sent = 0
    with PeakRss(server.process.pid) as rss:
        async with connect(server.ws_url + "/interop", max_size=None) as ws:
            await ws.send(HANDSHAKE)
            deadline = time.monotonic() + 6
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(ws.send(record * 4), remaining)
                except TimeoutError:
                    break  # the server holds us back: exactly what it should do
                sent += 4 * len(record)
    assert rss.growth < RSS_MARGIN_MB, f"RSS grew {rss.growth:.0f} MB while the client sent {sent / 1e6:.0f} MB"
    async with connect(server.ws_url + "/interop") as other:  # the server is fine
        await other.send(HANDSHAKE)
        assert await other.recv() == "{}" + RS


def _stalled_member(port: int, group: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer that joins ``group`` and then never reads again."""
    sock, received = _raw_client(port, receive_buffer=4096)
    sock.sendall(_masked(_invocation("JoinGroup", group, invocation_id="1")))
    while b'"invocationId":"1"' not in received:
        received += sock.recv(4096)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Read what is buffered until the server's close (EOF or reset) shows, within ``within`` seconds."""
    deadline = time.monotonic() + within
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


async def test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded(server):
    """150 MB of group traffic for a member that reads nothing: its outbox bound closes it on every server."""
    await _warm_up(server)
    stalled = _stalled_member(server.port, "busy")
    try:
        record = _invocation("SendToGroup", "busy", "x" * 30_000)
        with PeakRss(server.process.pid) as rss:
            async with connect(server.ws_url + "/interop") as sender:
                await sender.send(HANDSHAKE)
                assert await sender.recv() == "{}" + RS
                for _ in range(500):
                    await sender.send(record * 10)  # no invocation id: nothing comes back
                await sender.send(_invocation("Echo", "done", invocation_id="end"))
                while '"invocationId":"end"' not in str(await sender.recv()):
                    pass
            await asyncio.sleep(1)
        assert rss.growth < RSS_MARGIN_MB, f"RSS grew {rss.growth:.0f} MB for 150 MB of traffic to a stalled reader"
        assert _closed_by_server(stalled, within=20), "the stalled client was not closed"
    finally:
        stalled.close()


def _raw_client(port: int, receive_buffer: int | None = None) -> tuple[socket.socket, bytes]:
    """A raw WebSocket client after the upgrade and the handshake; returns the socket and what it read."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connecting: the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /interop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 101")
    sock.sendall(_masked(HANDSHAKE))
    return sock, received.split(b"\r\n\r\n", 1)[1]


def _masked(text: str) -> bytes:
    """One masked text frame (see :func:`_raw_frame`)."""
    return _raw_frame(0x1, text.encode(), fin=True)


def test_a_client_that_reads_late_still_gets_the_close_message(server):
    """The server closes (AbortMe); the client reads only 2 s later, after sending once more meanwhile."""
    sock, received = _raw_client(server.port)
    try:
        sock.sendall(_masked(_invocation("AbortMe", invocation_id="1")))
        time.sleep(0.5)
        sock.sendall(_masked(_invocation("Echo", "late", invocation_id="2")))  # still talking, as clients do
        time.sleep(1.5)
        sock.settimeout(5)
        deadline = time.monotonic() + 5
        while b'"type":7' not in received and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                raise AssertionError(f"the connection was reset before the Close message was read: {exc!r}") from exc
            if not chunk:
                break
            received += chunk
        assert b'"type":7' in received, received[-200:]
    finally:
        sock.close()


def _raw_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A masked client frame of any size."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(mask * (length // 4 + 1), "little")).to_bytes(
        length + 4, "little"
    )[:length]
    return head + mask + body


def test_unfinished_fragmented_messages_are_refused_past_a_mebibyte(server):
    """20 sockets each sending a fragmented message that never ends (up to 15 MB each): closed at 1 MiB."""
    chunk = b"x" * (256 * 1024)
    closed = 0
    sockets: list[socket.socket] = []
    with PeakRss(server.process.pid) as rss:
        for _ in range(20):
            sock, _received = _raw_client(server.port)
            sockets.append(sock)
            sock.settimeout(5)
            try:
                sock.sendall(_raw_frame(0x1, chunk, fin=False))
                for _ in range(59):  # 15 MB in all, never finished
                    sock.sendall(_raw_frame(0x0, chunk, fin=False))
            except OSError:
                closed += 1  # the server refused the message and closed: what it should do
                continue
            closed += _closed_by_server(sock, within=5)
        time.sleep(0.5)
    for sock in sockets:
        sock.close()
    assert closed == 20, f"only {closed} of 20 sockets holding unfinished messages were closed"
    assert rss.growth < RSS_MARGIN_MB, f"RSS grew {rss.growth:.0f} MB for 20 unfinished messages"


def _close_code(sock: socket.socket, received: bytes, within: float = 10) -> int | None:
    """Read server frames until a close frame; its status code (None if the server dropped TCP instead)."""
    buffer = received
    deadline = time.monotonic() + within
    sock.settimeout(1)
    while time.monotonic() < deadline:
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            offset = 2
            if length == 126:
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                break
            payload, buffer = buffer[offset : offset + length], buffer[offset + length :]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        buffer += chunk
    return None


#: Frame-level violations and the close code each must get (None: a frame over 1 MiB, built by the test).
FRAME_VIOLATIONS = pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0x81, 0x84]) + b"\0\0\0\0" + b"\xff\xfe\xfd\xfc", 1007),  # a text frame that is not UTF-8
        (bytes([0xC1, 0x82]) + b"\0\0\0\0" + b"hi", 1002),  # RSV1 set, no extension negotiated
        (None, 1009),  # a frame over 1 MiB
    ],
    ids=["invalid-utf8", "reserved-bit", "too-big"],
)


@FRAME_VIOLATIONS
def test_frame_level_violations_are_answered_with_their_close_code(server, frame, code):
    sock, received = _raw_client(server.port)
    try:
        sock.settimeout(10)
        while b"{}\x1e" not in received:
            received += sock.recv(4096)
        received = received.split(b"{}\x1e", 1)[1]
        if frame is None:
            frame = _raw_frame(0x1, b"x" * (1024 * 1024 + 1), fin=True)
        with contextlib.suppress(OSError):
            sock.sendall(frame)
        assert _close_code(sock, received) == code
    finally:
        sock.close()


async def test_one_user_cannot_open_more_than_the_limit_of_connections(server, live_users):
    """1,000 connections of one user were all accepted before; now the 101st gets a Close that says why."""
    headers = {"Cookie": live_users["alice"]}
    opened = []
    try:
        for _ in range(100):
            ws = await connect(server.ws_url + "/interop", additional_headers=headers, open_timeout=15)
            opened.append(ws)
            await ws.send(HANDSHAKE)
            assert await asyncio.wait_for(ws.recv(), 15) == "{}" + RS
        async with connect(server.ws_url + "/interop", additional_headers=headers, open_timeout=15) as extra:
            await extra.send(HANDSHAKE)
            frames = ""
            while '"type":7' not in frames:
                frames += str(await asyncio.wait_for(extra.recv(), 15))
        close = json.loads(frames.split(RS)[-2])
        assert close == {
            "type": 7,
            "error": "Too many connections: a user may hold 100 to this hub on a server.",
            "allowReconnect": False,
        }
        async with connect(server.ws_url + "/interop", additional_headers={"Cookie": live_users["bob"]}) as bob:
            await bob.send(HANDSHAKE)
            assert await asyncio.wait_for(bob.recv(), 15) == "{}" + RS  # other users are not affected
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


async def test_one_connection_cannot_join_more_than_the_limit_of_groups(server):
    """300,000 groups of 256 characters were accepted before (and leaving them stalled the loop 3 s)."""
    async with connect(server.ws_url + "/interop", max_size=None) as ws:
        await ws.send(HANDSHAKE)
        assert await ws.recv() == "{}" + RS
        names = ["g" * 250 + f"{index:06d}" for index in range(1001)]
        for start in range(0, 1001, 100):
            await ws.send(
                "".join(
                    _invocation("JoinGroup", name, invocation_id=str(i))
                    for i, name in enumerate(names[start : start + 100], start)
                )
            )
        results: dict[str, dict[str, object]] = {}
        while len(results) < 1001:
            for record in str(await asyncio.wait_for(ws.recv(), 30)).split(RS):
                if record:
                    message = json.loads(record)
                    if message.get("type") == 3:
                        results[str(message["invocationId"])] = message
        refused = [key for key, message in results.items() if "error" in message]
        assert refused == ["1000"], refused
        assert "Too many groups: a connection may be in 1000 at once." in str(results["1000"]["error"])


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("http://127.0.0.1:{port}", True), ("http://127.0.0.1:1", False), ("https://127.0.0.1:{port}", True)],
    ids=["same-origin", "another-port", "https-page"],
)
async def test_the_origin_must_be_the_sockets_own_scheme_host_and_port(server, origin, allowed):
    """Any origin on an allowed host passed before; another port is another origin now."""
    headers = {"Origin": origin.format(port=server.port)}
    if allowed:
        async with connect(server.ws_url + "/interop", additional_headers=headers) as ws:
            await ws.send(HANDSHAKE)
            assert await ws.recv() == "{}" + RS
        return
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url + "/interop", additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403
