"""``manage.py signalr_connections``: the hub context from a process with no connections, over Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live import ROOT

pytestmark = pytest.mark.timeout(90)


def _manage(redis_url: str, *args: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "SIGNALR_TEST_REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "signalr_connections", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_count_and_disconnect_from_a_management_command(redis_server_process, redis_url, live_users, node):
    url = redis_server_process.http_url + "/interop"
    ids = {
        name: node.connect(name, url, cookie=live_users[user])
        for name, user in (("alice1", "alice"), ("alice2", "alice"), ("bob", "bob"))
    }
    node.invoke("alice1", "JoinGroup", "ops-room")
    node.invoke("bob", "JoinGroup", "ops-room")

    listing = _manage(redis_url, "interop")
    for connection_id in ids.values():
        assert connection_id in listing
    assert "3 connection(s), 2 user(s)" in listing

    grouped = _manage(redis_url, "interop", "--group", "ops-room")
    assert "group ops-room: 2 connection(s), 2 user(s)" in grouped
    assert ids["alice2"] not in grouped

    closed = _manage(redis_url, "interop", "--user", "alice", "--disconnect")
    assert "2 connection(s), 1 user(s)" in closed
    assert "disconnected 2" in closed
    for name in ("alice1", "alice2"):
        node.wait_for(name, lambda events: any(event["target"] == "__closed__" for event in events))
    assert node.invoke("bob", "GetUserIdentifier") == "bob"


def test_the_live_connections_admin_has_only_its_list_page(admin_client):
    assert admin_client.get("/admin/signalr_groups/liveconnection/").status_code == 200
    for path in ("1/change/", "1/history/", "1/delete/", "add/"):
        assert admin_client.get(f"/admin/signalr_groups/liveconnection/{path}").status_code in (302, 404), path
