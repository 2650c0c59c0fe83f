"""A database that cannot answer (SQLite locked by another process) gets negotiate a clear, retryable 503."""

from __future__ import annotations

import shutil
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(90)


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
