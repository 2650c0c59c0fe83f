"""What daphne enforces below the hub protocol (checklist rows 7, 28 and 35), checked on the real server."""

from __future__ import annotations

import base64
import os
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(60)


def _upgrade(port: int, extra_headers: str) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /interop HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        return sock.recv(4096).decode("latin-1")


def test_row35_permessage_deflate_is_not_negotiated(live_server_process):
    answer = _upgrade(
        live_server_process.port, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    )
    assert answer.startswith("HTTP/1.1 101")
    assert "sec-websocket-extensions" not in answer.lower()


def test_row28_smuggled_origin_header_is_refused(live_server_process):
    """CVE-2026-44546: a header with a \\x0b must not smuggle an Origin into the scope (daphne ≥ 4.2.2)."""
    answer = _upgrade(live_server_process.port, "X-Pad: a\x0bOrigin: http://evil.example\r\n")
    assert answer.startswith("HTTP/1.1 400")


async def test_row7_frames_over_one_mebibyte_are_refused_by_the_server(live_server_process):
    async with connect(live_server_process.ws_url + "/interop", max_size=None) as ws:
        await ws.send('{"protocol":"json","version":1}\x1e')
        assert await ws.recv() == "{}\x1e"
        await ws.send("x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()  # autobahn fails the connection before the application sees the frame
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    async with connect(live_server_process.ws_url + "/interop") as other:  # the server is fine
        await other.send('{"protocol":"json","version":1}\x1e')
        assert await other.recv() == "{}\x1e"
