"""The negotiate endpoint, and the WebSocket's checks of the token and the Origin it is opened with."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from django.test import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

NEGOTIATE = "/interop/negotiate"
HANDSHAKE = '{"protocol":"json","version":1}\x1e'
TIMEOUT = 5.0


# ---------------------------------------------------------------- the negotiate view (no server)


ALL_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


def negotiate(query: str = "") -> tuple[int, dict[str, Any]]:
    response = Client().post(NEGOTIATE + query)
    assert response["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content)


def test_get_is_not_allowed():
    response = Client().get(NEGOTIATE)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_without_version_answers_v0():
    status, body = negotiate()
    assert status == 200
    assert body["negotiateVersion"] == 0
    assert isinstance(body["connectionId"], str) and body["connectionId"]
    assert "connectionToken" not in body
    assert body["availableTransports"] == ALL_TRANSPORTS
    assert "ProtocolVersion" not in body
    assert negotiate()[1]["connectionId"] != body["connectionId"]


def test_version_1_has_a_separate_secret_token():
    status, body = negotiate("?negotiateVersion=1")
    assert status == 200
    assert body["negotiateVersion"] == 1
    connection_id, token = body["connectionId"], body["connectionToken"]
    assert len(connection_id) == 22
    assert token and token != connection_id
    assert body["availableTransports"] == ALL_TRANSPORTS
    assert body.get("useStatefulReconnect", False) is False
    assert "ProtocolVersion" not in body


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("?NegotiateVersion=1", id="parameter-name-is-case-insensitive"),
        pytest.param("?negotiateVersion=99", id="a-newer-version-is-answered-with-1"),
    ],
)
def test_version_1_answers(query):
    status, body = negotiate(query)
    assert status == 200
    assert body["negotiateVersion"] == 1
    assert "connectionToken" in body
    assert "ProtocolVersion" not in body


def test_a_non_integer_version_is_an_error_body():
    status, body = negotiate("?negotiateVersion=abc")
    assert status == 200
    assert body == {"error": "The client requested a non-integer protocol version."}


# ---------------------------------------------------------------- the WebSocket against a live server


class Live:
    """Negotiate over HTTP and open WebSockets against the live server."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def _negotiate_sync(self, version: int | None, cookie: str | None) -> dict[str, Any]:
        query = "" if version is None else f"?negotiateVersion={version}"
        headers = {"Cookie": cookie} if cookie else {}
        request = urllib.request.Request(self.server.http_url + NEGOTIATE + query, data=b"", headers=headers)
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())

    async def negotiate_body(self, *, version: int | None = 1, cookie: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._negotiate_sync, version, cookie)

    async def negotiate(self, *, version: int | None = 1, cookie: str | None = None) -> str:
        """Negotiate and return the value for ``id=`` (the token; for v0 the connection id)."""
        body = await self.negotiate_body(version=version, cookie=cookie)
        return body["connectionToken"] if version else body["connectionId"]

    def connect(
        self, token: str | None, *, cookie: str | None = None, origin: str | None = None, hub: str = "interop"
    ) -> Any:
        url = f"{self.server.ws_url}/{hub}" + ("" if token is None else f"?id={token}")
        headers = {}
        if cookie:
            headers["Cookie"] = cookie
        if origin is not None:
            headers["Origin"] = origin
        return connect(url, additional_headers=headers, proxy=None, open_timeout=TIMEOUT, close_timeout=1)

    async def open_and_call(self, token: str | None, **kwargs: Any) -> Any:
        """Connect, handshake, and return ``GetUserIdentifier``; the socket is closed afterwards."""
        async with self.connect(token, **kwargs) as ws:
            await handshake(ws)
            return await invoke(ws, "GetUserIdentifier")

    async def refused(self, token: str | None, **kwargs: Any) -> int:
        """Try to connect; return the HTTP status of the refusal (fails if the socket opened)."""
        with pytest.raises(InvalidStatus) as info:
            async with self.connect(token, **kwargs):
                pass
        return int(info.value.response.status_code)


async def handshake(ws: ClientConnection) -> None:
    await ws.send(HANDSHAKE)
    reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert reply == "{}\x1e"


async def invoke(ws: ClientConnection, method: str, *args: Any) -> Any:
    await ws.send(json.dumps({"type": 1, "invocationId": "1", "target": method, "arguments": list(args)}) + "\x1e")
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        for record in str(raw).split("\x1e"):
            if not record:
                continue
            message = json.loads(record)
            if message["type"] == 3 and message["invocationId"] == "1":
                assert "error" not in message, message["error"]
                return message.get("result")


@pytest.fixture
def live(live_server_process) -> Live:
    return Live(live_server_process)


async def test_a_negotiated_v1_token_connects_and_handshakes(live, live_users):
    token = await live.negotiate(version=1)
    assert await live.open_and_call(token) is None


async def test_a_negotiated_v0_connection_id_connects(live, live_users):
    connection_id = await live.negotiate(version=None)
    async with live.connect(connection_id) as ws:
        await handshake(ws)
        assert await invoke(ws, "GetConnectionId") == connection_id
    assert await live.refused(connection_id) == 403  # used up, like a v1 token


async def test_unknown_or_garbage_ids_are_refused(live, live_users):
    # daphne lacks the denial-response extension, so every refusal becomes a 403.
    assert await live.refused("AAAAAAAAAAAAAAAAAAAAAA") == 403
    assert await live.refused("not-a-token") == 403
    assert await live.refused("") == 403
    body = await live.negotiate_body(version=1)
    assert await live.refused(body["connectionId"]) == 403  # the public id of a v1 negotiate is not a token
    assert await live.refused(body["connectionToken"] + "x") == 403  # a tampered signature
    assert await live.open_and_call(body["connectionToken"]) is None


async def test_a_token_is_bound_to_its_hub(live, live_users):
    token = await live.negotiate(version=1)
    assert await live.refused(token, hub="other") == 403
    assert await live.open_and_call(token) is None


async def test_a_token_is_accepted_once(live, live_users):
    token = await live.negotiate(version=1)
    assert await live.open_and_call(token) is None
    assert await live.refused(token) == 403


async def test_a_token_is_refused_while_its_connection_is_open(live, live_users):
    token = await live.negotiate(version=1)
    async with live.connect(token) as ws:
        await handshake(ws)
        assert await live.refused(token) == 403
        assert await invoke(ws, "Echo", "first socket") == "first socket"


async def test_a_token_is_bound_to_the_user_who_negotiated(live, live_users):
    token = await live.negotiate(version=1, cookie=live_users["alice"])
    assert await live.refused(token, cookie=live_users["bob"]) == 403
    assert await live.refused(token) == 403  # nor anonymously
    # The refusals did not use the token up: alice herself still can.
    assert await live.open_and_call(token, cookie=live_users["alice"]) == "alice"


async def test_an_anonymous_token_works_only_anonymously(live, live_users):
    token = await live.negotiate(version=1)
    assert await live.refused(token, cookie=live_users["alice"]) == 403
    assert await live.open_and_call(token) is None


async def test_a_v0_id_is_bound_to_the_user_too(live, live_users):
    connection_id = await live.negotiate(version=None, cookie=live_users["bob"])
    assert await live.refused(connection_id, cookie=live_users["carol"]) == 403
    assert await live.open_and_call(connection_id, cookie=live_users["bob"]) == "bob"


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example", "file://"])
async def test_a_foreign_origin_is_refused(live, live_users, origin):
    token = await live.negotiate(version=1, cookie=live_users["alice"])
    assert await live.refused(token, cookie=live_users["alice"], origin=origin) == 403
    # The token was fine (and still unused): only the Origin was wrong.
    assert await live.open_and_call(token, cookie=live_users["alice"]) == "alice"


async def test_the_sites_own_origin_is_accepted(live, live_server_process, live_users):
    token = await live.negotiate(version=1, cookie=live_users["alice"])
    origin = f"http://127.0.0.1:{live_server_process.port}"
    assert await live.open_and_call(token, cookie=live_users["alice"], origin=origin) == "alice"


async def test_no_origin_is_accepted(live, live_users):
    token = await live.negotiate(version=1, cookie=live_users["bob"])
    assert await live.open_and_call(token, cookie=live_users["bob"]) == "bob"


@pytest.mark.django_db
def test_minimum_negotiate_version_refuses_v0():
    from django.test import override_settings

    with override_settings(SIGNALR_GROUPS={"MIN_NEGOTIATE_VERSION": 1}):
        status, body = negotiate("")
        assert status == 200
        assert body == {"error": "The client requested version '0', but the server does not support this version."}
        status, body = negotiate("?negotiateVersion=1")
        assert body["negotiateVersion"] == 1


@pytest.mark.django_db
def test_cross_origin_negotiate_gets_no_cors_grant():
    """Row 27: a foreign page may POST (the official clients send no CSRF token) but never read the answer."""
    from django.test import Client

    client = Client()
    answer = client.post("/interop/negotiate?negotiateVersion=1", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Credentials" not in answer.headers
    preflight = client.options(
        "/interop/negotiate?negotiateVersion=1",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 405 and "Access-Control-Allow-Origin" not in preflight.headers
