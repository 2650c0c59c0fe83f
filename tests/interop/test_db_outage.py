"""A database that cannot answer (SQLite locked by another process) gets negotiate a clear, retryable 503."""

from __future__ import annotations

import shutil
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(90)

HANDSHAKE = '{"protocol":"json","version":1}\x1e'


def _negotiate(server: ServerProcess, cookie: str) -> tuple[int, str]:
    request = urllib.request.Request(
        server.http_url + "/interop/negotiate?negotiateVersion=1", data=b"", headers={"Cookie": cookie}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_negotiate_answers_503_while_the_database_is_locked(live_users, tmp_path):
    database = tmp_path / "locked.sqlite3"
    shutil.copy(str(settings.DATABASES["default"]["NAME"]), database)  # with alice's session in it
    server = ServerProcess(tmp_path / "server.log", str(database))
    try:
        assert _negotiate(server, live_users["alice"])[0] == 200
        lock = sqlite3.connect(database, timeout=1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            status, body = _negotiate(server, live_users["alice"])
            elapsed = time.monotonic() - started
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        print(f"negotiate with the database locked: {status} after {elapsed:.1f} s")
        assert status == 503 and "database is unavailable" in body
        assert elapsed < 15  # one query's lock timeout, not a chain of them
        assert _negotiate(server, live_users["alice"])[0] == 200  # and back once the lock is gone
    finally:
        server.stop()


@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
async def test_a_websocket_is_refused_with_a_clear_answer_while_the_database_is_locked(
    live_users, tmp_path, server_kind
):
    """Channels' auth middleware reads the session first; under HubMiddlewareStack a failure is a refusal, not a hang."""
    database = tmp_path / "locked.sqlite3"
    shutil.copy(str(settings.DATABASES["default"]["NAME"]), database)
    # daphne drops a socket not accepted within --websocket_connect_timeout (5 s), which is also
    # SQLite's lock timeout: give it 10 s, as the README advises, so that the refusal gets through.
    extra = ["--websocket_connect_timeout", "10"] if server_kind == "daphne" else None
    server = ServerProcess(tmp_path / "server.log", str(database), server=server_kind, extra_args=extra)
    headers = {"Cookie": live_users["alice"]}
    try:
        async with connect(server.ws_url + "/interop", additional_headers=headers, open_timeout=15) as ws:
            await ws.send(HANDSHAKE)
            assert await ws.recv() == "{}\x1e"
        lock = sqlite3.connect(database, timeout=1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url + "/interop", additional_headers=headers, open_timeout=30):
                    pass
            elapsed = time.monotonic() - started
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        status = refused.value.response.status_code
        print(f"{server_kind}: a WebSocket with the database locked: {status} after {elapsed:.1f} s")
        assert status == (503 if server_kind == "uvicorn" else 403)  # daphne cannot send a status: 403
        assert elapsed < 15
        async with connect(server.ws_url + "/interop", additional_headers=headers, open_timeout=15) as ws:
            await ws.send(HANDSHAKE)
            assert await ws.recv() == "{}\x1e"
    finally:
        server.stop()
