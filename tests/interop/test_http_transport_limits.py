"""A Server-Sent Events or long-polling client that stops reading cannot grow the server's memory.

On daphne and on uvicorn, measured from the server process's RSS: 150 MB of group traffic for
a member that reads nothing. On SSE the response's write backpressure (uvicorn's own, daphne's
through :class:`~signalr_groups.server.flow.DaphneHttpFlowControl`) holds the outbox, whose
bound closes the connection; on long polling nothing is written until a poll comes, and the
same bound closes it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from tests.interop.test_hostile_clients import HANDSHAKE, RS, RSS_MARGIN_MB, PeakRss, _invocation, _warm_up
from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request, django_db_setup, tmp_path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server.log", str(settings.DATABASES["default"]["NAME"]), server=request.param)
    yield process
    process.stop()


def _http(method: str, url: str, body: bytes = b"") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _negotiate(server: ServerProcess) -> str:
    status, body = _http("POST", server.http_url + "/interop/negotiate?negotiateVersion=1")
    assert status == 200
    return str(json.loads(body)["connectionToken"])


def _stalled_sse_member(server: ServerProcess, group: str) -> socket.socket:
    """An SSE client with a tiny receive buffer that joins ``group`` (through POSTs) and never reads again."""
    token = _negotiate(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /interop?id={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    received = b""
    while b":\r\n" not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    url = f"{server.http_url}/interop?id={token}"
    assert _http("POST", url, HANDSHAKE.encode())[0] == 200
    assert _http("POST", url, _invocation("JoinGroup", group, invocation_id="1").encode())[0] == 200
    while b'"invocationId":"1"' not in received:
        received += sock.recv(4096)
    return sock


def _stalled_polling_member(server: ServerProcess, group: str) -> str:
    """A long-polling client that joins ``group`` and then never polls again; returns its URL."""
    token = _negotiate(server)
    url = f"{server.http_url}/interop?id={token}"
    assert _http("GET", url)[0] == 200
    assert _http("POST", url, HANDSHAKE.encode())[0] == 200
    assert _http("POST", url, _invocation("JoinGroup", group, invocation_id="1").encode())[0] == 200
    received = b""
    deadline = time.monotonic() + 10
    while b'"invocationId":"1"' not in received and time.monotonic() < deadline:
        received += _http("GET", url)[1]
    assert b'"invocationId":"1"' in received
    return url


def _stream_ended(sock: socket.socket, within: float) -> bool:
    """Read what is buffered until the response ends (its last chunk, or the connection closed)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.5)
    tail = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            return True
        if not chunk:
            return True
        tail = (tail + chunk)[-64:]
        if tail.endswith(b"\r\n0\r\n\r\n"):
            return True
    return False


async def _flood(server: ServerProcess, group: str) -> None:
    """150 MB of group sends, then a round trip (so the server has handled all of them)."""
    record = _invocation("SendToGroup", group, "x" * 30_000)
    async with connect(server.ws_url + "/interop") as sender:
        await sender.send(HANDSHAKE)
        assert await sender.recv() == "{}" + RS
        for _ in range(500):
            await sender.send(record * 10)
        await sender.send(_invocation("Echo", "done", invocation_id="end"))
        while '"invocationId":"end"' not in str(await sender.recv()):
            pass


async def test_an_event_stream_that_stops_reading_is_closed_and_memory_stays_bounded(server):
    await _warm_up(server)
    stalled = await asyncio.to_thread(_stalled_sse_member, server, "busy")
    try:
        with PeakRss(server.process.pid) as rss:
            await _flood(server, "busy")
            await asyncio.sleep(1)
        assert rss.growth < RSS_MARGIN_MB, f"RSS grew {rss.growth:.0f} MB for 150 MB to a stalled SSE reader"
        assert await asyncio.to_thread(_stream_ended, stalled, 20), "the stalled event stream was not ended"
    finally:
        stalled.close()


async def test_a_client_that_stops_polling_is_closed_and_memory_stays_bounded(server):
    await _warm_up(server)
    url = await asyncio.to_thread(_stalled_polling_member, server, "busy")
    with PeakRss(server.process.pid) as rss:
        await _flood(server, "busy")
        await asyncio.sleep(1)
    assert rss.growth < RSS_MARGIN_MB, f"RSS grew {rss.growth:.0f} MB for 150 MB to a client that stopped polling"
    # Its outbox bound closed it: polls now get what was already written for it, the Close message, then 204.
    bodies = b""
    for _ in range(5):
        status, body = await asyncio.to_thread(_http, "GET", url)
        if status != 200:
            break
        bodies += body
    assert status in (204, 404), status
    assert b'"type":7' in bodies[-300:] and b"did not read its messages fast enough" in bodies[-300:], bodies[-300:]
