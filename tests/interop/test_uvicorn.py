"""The same app under uvicorn: official client interop, and real HTTP statuses for refused sockets."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.live import NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(60)
RS = "\x1e"


@pytest.fixture(scope="module")
def uvicorn_process(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    log_path: Path = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    server = ServerProcess(log_path, str(settings.DATABASES["default"]["NAME"]), server="uvicorn")
    yield server
    server.stop()


def _negotiate(server: ServerProcess) -> dict[str, str]:
    request = urllib.request.Request(server.http_url + "/interop/negotiate?negotiateVersion=1", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_official_client_under_uvicorn(uvicorn_process, live_users, node: NodeDriver):
    url = uvicorn_process.http_url + "/interop"
    node.connect("alice", url, cookie=live_users["alice"])
    node.connect("bob", url, cookie=live_users["bob"])
    assert node.invoke("alice", "GetUserIdentifier") == "alice"
    node.invoke("alice", "JoinGroup", "uv")
    node.invoke("bob", "SendToGroup", "uv", "hello from uvicorn")
    node.wait_for("alice", lambda events: received(events) == [["group", "hello from uvicorn"]])
    node.invoke("bob", "SendToUser", "alice", "direct")
    node.wait_for("alice", lambda events: ["user", "direct"] in received(events))


async def test_refusals_carry_real_status_codes_under_uvicorn(uvicorn_process):
    """uvicorn supports the ASGI denial-response extension: 404 for an unknown id, 409 for a live one."""
    base = uvicorn_process.ws_url + "/interop"
    with pytest.raises(InvalidStatus) as unknown:
        async with connect(base + "?id=not-a-token"):
            pass
    assert unknown.value.response.status_code == 404

    token = _negotiate(uvicorn_process)["connectionToken"]
    async with connect(f"{base}?id={token}") as first:
        await first.send('{"protocol":"json","version":1}' + RS)
        assert await first.recv() == "{}" + RS
        with pytest.raises(InvalidStatus) as duplicate:
            async with connect(f"{base}?id={token}"):
                pass
        assert duplicate.value.response.status_code == 409

    with pytest.raises(InvalidStatus) as foreign:
        async with connect(base, additional_headers={"Origin": "http://evil.example"}):
            pass
    assert foreign.value.response.status_code == 403


async def test_tokens_never_reach_the_server_log(uvicorn_process, live_users):
    """uvicorn logs WebSocket URLs with their query string: access_token and id values must be redacted."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    from signalr_groups.auth.access_tokens import issue_access_token

    user = await sync_to_async(get_user_model().objects.get)(username="alice")
    access_token = await sync_to_async(issue_access_token)(user)
    connection_token = _negotiate(uvicorn_process)["connectionToken"]
    async with connect(f"{uvicorn_process.ws_url}/protected?access_token={access_token}") as ws:
        await ws.send('{"protocol":"json","version":1}' + RS)
        assert await ws.recv() == "{}" + RS
    async with connect(f"{uvicorn_process.ws_url}/interop?id={connection_token}") as ws:
        await ws.send('{"protocol":"json","version":1}' + RS)
        assert await ws.recv() == "{}" + RS
    encoded_token = _negotiate(uvicorn_process)["connectionToken"]
    async with connect(f"{uvicorn_process.ws_url}/interop?%69d={encoded_token}") as ws:  # "id", percent-encoded
        await ws.send('{"protocol":"json","version":1}' + RS)
        assert await ws.recv() == "{}" + RS
    log = uvicorn_process.log()
    assert "access_token=[redacted]" in log and "id=[redacted]" in log and "%69d=[redacted]" in log
    assert access_token not in log and connection_token not in log and encoded_token not in log
