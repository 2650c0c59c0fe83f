"""Stateful reconnect on the wire: raw WebSocket clients against real daphne and uvicorn processes.

Checked against the protocol (``../shared/docs/signalr-protocol.md`` §7, ``HubProtocol.md``
§Stateful Reconnect): negotiate's ``useStatefulReconnect``, the version-2 handshake, the numbered
messages (types 1-5) and their ``Ack`` and ``Sequence`` records, the replay on a resumed socket
(which sends no handshake), the backpressure of a full replay buffer, the reconnect window and the
per-user cap on held connections, and the exact Close message for every bad Ack or Sequence.

A dropped socket is ``transport.abort()``: the TCP connection ends without a WebSocket close, as a
failing network does. daphne has no ASGI denial-response extension, so it answers every refused
upgrade with 403; the status the app chose (404, 409) is then read from the server's log, where
``signalr_groups.server.endpoint.deny`` writes it. uvicorn sends it on the wire.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from django.conf import settings as django_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(90)

RS = "\x1e"
HANDSHAKE_V1 = '{"protocol":"json","version":1}' + RS
HANDSHAKE_V2 = '{"protocol":"json","version":2}' + RS
HANDSHAKE_OK = "{}" + RS
#: The message types that are numbered, acknowledged and replayed.
TRACKED = {1, 2, 3, 4, 5}
#: Seconds any single wait may take.
TIMEOUT = 10.0
WINDOW = 3.0
BUFFER = 20_000
HELD = 2
SETTINGS = {
    "ALLOW_STATEFUL_RECONNECTS": True,
    "DISCONNECT_TIMEOUT": WINDOW,
    "MAX_HELD_CONNECTIONS_PER_USER": HELD,
    "STATEFUL_RECONNECT_BUFFER_SIZE": BUFFER,
}
STATEFUL_QUERY = "negotiateVersion=1&useStatefulReconnect=true"
GENERIC_CLOSE = "Connection closed with an error."
NO_CONNECTION = (404, "No Connection with that ID")
#: What each server reports (``websocket.disconnect``) for a TCP connection lost without a close frame.
ABRUPT_CLOSE_CODE = {"daphne": 1006, "uvicorn": 1005}
#: The line ``deny`` logs for a refused upgrade.
REFUSAL = re.compile(r"^signalr_groups: refused a WebSocket to /interop: (\d{3}) (.*)$", re.MULTILINE)


# ---------------------------------------------------------------- processes


@dataclass
class Live:
    """A server process and what serves it ("daphne" or "uvicorn")."""

    process: ServerProcess
    kind: str

    @property
    def http_url(self) -> str:
        return self.process.http_url

    @property
    def ws_url(self) -> str:
        return self.process.ws_url

    def log(self) -> str:
        return self.process.log()


def _start(tmp_path_factory: pytest.TempPathFactory, kind: str, hub_settings: dict[str, Any]) -> Live:
    log_path = tmp_path_factory.mktemp(f"stateful-protocol-{kind}") / "server.log"
    process = ServerProcess(
        log_path,
        str(django_settings.DATABASES["default"]["NAME"]),
        server=kind,
        extra_env={
            "SIGNALR_TEST_SETTINGS": json.dumps(hub_settings),
            "SIGNALR_TEST_LOG_LEVEL": "INFO",  # the refusals' statuses and the held connections are read from it
            "PYTHONUNBUFFERED": "1",
        },
    )
    return Live(process, kind)


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, django_db_setup, tmp_path_factory) -> Iterator[Live]:
    """A server allowing stateful reconnect: a 3 s window, 2 held connections per user, a 20,000-byte buffer."""
    live = _start(tmp_path_factory, request.param, SETTINGS)
    yield live
    live.process.stop()


@pytest.fixture(scope="module")
def plain_server(django_db_setup, tmp_path_factory) -> Iterator[Live]:
    """daphne with stateful reconnect not allowed (the default)."""
    live = _start(tmp_path_factory, "daphne", {"DISCONNECT_TIMEOUT": WINDOW})
    yield live
    live.process.stop()


# ---------------------------------------------------------------- wire helpers


def record(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":")) + RS


def invocation(target: str, *arguments: Any, invocation_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return message


def ack(sequence_id: Any) -> dict[str, Any]:
    return {"type": 8, "sequenceId": sequence_id}


def sequence(sequence_id: Any) -> dict[str, Any]:
    return {"type": 9, "sequenceId": sequence_id}


def protocol_close(error: str) -> dict[str, Any]:
    """The Close message of a protocol error (reconnecting is allowed, as ASP.NET Core)."""
    return {"type": 7, "error": f"{GENERIC_CLOSE} ProtocolError: {error}", "allowReconnect": True}


class Raw:
    """A WebSocket speaking the JSON hub protocol by hand: records read one at a time, everything kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._pending: deque[str] = deque()
        #: Every message received (Pings included), in order.
        self.seen: list[dict[str, Any]] = []
        #: The exact text of every numbered record received (types 1-5, with the separator), in order.
        self.tracked: list[str] = []

    async def frame(self, timeout: float = TIMEOUT) -> str:
        """The next WebSocket message as it came (only while no record of an earlier one is pending)."""
        assert not self._pending, self._pending
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str), f"a binary frame on a JSON connection: {frame!r}"
        return frame

    async def record(self, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
        """The next record: its exact text and the message."""
        while not self._pending:
            frame = await self.frame(timeout)
            assert frame.endswith(RS), f"a record was split: {frame[-80:]!r}"
            self._pending.extend(part + RS for part in frame.split(RS)[:-1])
        text = self._pending.popleft()
        message = json.loads(text[:-1])
        assert isinstance(message, dict), text
        self.seen.append(message)
        if message.get("type") in TRACKED:
            self.tracked.append(text)
        return text, message

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first message ``predicate`` accepts (the others are kept in :attr:`seen`), within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            _text, message = await self.record(max(0.01, deadline - time.monotonic()))
            if predicate(message):
                return message

    async def silence(self, seconds: float) -> list[dict[str, Any]]:
        """Everything but Pings that arrives within ``seconds`` (the socket must stay open)."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                _text, message = await self.record(remaining)
            except TimeoutError:
                break
            if message.get("type") != 6:
                messages.append(message)
        return messages

    async def send(self, *messages: dict[str, Any] | str) -> None:
        """Send records in one WebSocket message (a str is sent as it is)."""
        await self.ws.send("".join(item if isinstance(item, str) else record(item) for item in messages))

    async def call(self, target: str, *arguments: Any, invocation_id: str) -> Any:
        """Invoke and return the result (fails on an error completion)."""
        await self.send(invocation(target, *arguments, invocation_id=invocation_id))
        completion = await self.until(lambda m: m.get("type") == 3 and m.get("invocationId") == invocation_id)
        assert "error" not in completion, completion
        return completion.get("result")

    async def closed_by_server(self, timeout: float = TIMEOUT) -> tuple[list[dict[str, Any]], int | None]:
        """Read until the server closes: the messages before (Pings left out) and the close frame's code."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                _text, message = await self.record(max(0.01, deadline - time.monotonic()))
                if message.get("type") != 6:
                    messages.append(message)
        except ConnectionClosed as exc:
            return messages, exc.rcvd.code if exc.rcvd is not None else None

    def drop(self) -> None:
        """End the TCP connection at once: no WebSocket close, nothing acknowledged (a failing network)."""
        self.ws.transport.abort()


def received(raw: Raw, kind: str = "group") -> list[Any]:
    """The messages of ``Receive(kind, message)`` invocations received so far."""
    return [
        m["arguments"][1]
        for m in raw.seen
        if m.get("type") == 1 and m.get("target") == "Receive" and m["arguments"][0] == kind
    ]


def acks(messages: list[dict[str, Any]]) -> list[int]:
    """The ids of the Acks among ``messages``."""
    return [m["sequenceId"] for m in messages if m.get("type") == 8]


async def acked(raw: Raw, sequence_id: int, timeout: float = 3.0) -> list[int]:
    """Wait until the server's latest Ack on this socket is ``sequence_id`` (it acknowledges about once a
    second); return all its Acks on this socket."""
    deadline = time.monotonic() + timeout
    while acks(raw.seen)[-1:] != [sequence_id]:
        remaining = deadline - time.monotonic()
        try:
            assert remaining > 0
            await raw.record(remaining)
        except (AssertionError, TimeoutError):
            raise AssertionError(f"no Ack {sequence_id} within {timeout} s; Acks: {acks(raw.seen)}") from None
    return acks(raw.seen)


class Clients:
    """Opens raw clients on one server and closes them all after the test."""

    def __init__(self, server: Live, cookies: dict[str, str]) -> None:
        self.server = server
        self.cookies = cookies
        self._sockets: list[ClientConnection] = []

    def _headers(self, user: str | None) -> dict[str, str]:
        return {"Cookie": self.cookies[user]} if user is not None else {}

    async def negotiate(self, user: str | None, query: str = STATEFUL_QUERY) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            session.post(
                f"{self.server.http_url}/interop/negotiate?{query}",
                headers=self._headers(user),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            ) as response,
        ):
            assert response.status == 200, await response.text()
            body = await response.json()
            assert isinstance(body, dict)
            return body

    def _connect(self, token: str | None, user: str | None) -> Any:
        url = f"{self.server.ws_url}/interop" + ("" if token is None else f"?id={token}")
        return connect(
            url,
            additional_headers=self._headers(user),
            proxy=None,
            open_timeout=TIMEOUT,
            close_timeout=2,
            ping_interval=None,
            max_size=None,
        )

    async def socket(self, token: str | None, user: str | None) -> ClientConnection:
        ws = await self._connect(token, user)
        self._sockets.append(ws)
        return ws

    async def start(self, user: str, *, ask: bool = True, handshake: str = HANDSHAKE_V2) -> tuple[Raw, dict[str, Any]]:
        """Negotiate (asking for stateful reconnect, or not), connect with the token and shake hands."""
        body = await self.negotiate(user, STATEFUL_QUERY if ask else "negotiateVersion=1")
        assert body["useStatefulReconnect"] is ask, body
        raw = Raw(await self.socket(body["connectionToken"], user))
        await raw.ws.send(handshake)
        assert await raw.frame() == HANDSHAKE_OK
        return raw, body

    async def plain(self, user: str | None) -> Raw:
        """A connection without negotiate (no token) and a version-1 handshake: a sender or a watcher."""
        raw = Raw(await self.socket(None, user))
        await raw.ws.send(HANDSHAKE_V1)
        assert await raw.frame() == HANDSHAKE_OK
        return raw

    async def watcher(self) -> Raw:
        """A member of "lifecycle-watchers": InteropHub tells it ``Lifecycle("disconnected", id, reason)``."""
        watcher = await self.plain("bob")
        assert await watcher.call("JoinGroup", "lifecycle-watchers", invocation_id="w") is True
        return watcher

    async def resume(self, token: str, user: str | None) -> Raw:
        """A new socket with the token and no handshake: the stateful reconnect of the connection."""
        return Raw(await self.socket(token, user))

    async def refused(self, token: str, user: str | None) -> tuple[int, str]:
        """Try to open a socket with ``token``: the status and reason of the refusal the app chose."""
        before = len(REFUSAL.findall(self.server.log()))
        with pytest.raises(InvalidStatus) as info:
            async with self._connect(token, user):
                pass
        response = info.value.response
        if self.server.kind == "uvicorn":
            return response.status_code, response.body.decode()
        assert response.status_code == 403, response  # daphne: every refused upgrade is a 403
        deadline = time.monotonic() + TIMEOUT
        while len(refusals := REFUSAL.findall(self.server.log())) <= before:
            assert time.monotonic() < deadline, "the refusal was not logged"
            await asyncio.sleep(0.05)
        status, reason = refusals[before]
        return int(status), reason

    async def logged(self, text: str) -> None:
        """Wait until the server's log holds ``text``."""
        deadline = time.monotonic() + TIMEOUT
        while text not in self.server.log():
            assert time.monotonic() < deadline, f"not logged: {text}"
            await asyncio.sleep(0.05)

    async def serves_new_connections(self) -> None:
        fresh = await self.plain("bob")
        assert await fresh.call("Echo", "still here", invocation_id="fresh") == "still here"

    async def close_all(self) -> None:
        for ws in self._sockets:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except Exception:
                ws.transport.abort()


@pytest.fixture
async def clients(server: Live, live_users: dict[str, str]) -> AsyncIterator[Clients]:
    opened = Clients(server, live_users)
    yield opened
    await opened.close_all()


async def resumed(clients: Clients, body: dict[str, Any], user: str, replay: list[str]) -> Raw:
    """Resume the connection: its first frame must be ``Sequence{first unacknowledged}`` and the replay, exactly."""
    raw = await clients.resume(body["connectionToken"], user)
    first = await raw.frame()
    assert first.startswith('{"type":9,'), first[:200]
    head, _sep, rest = first.partition(RS)
    announced = json.loads(head)
    assert set(announced) == {"type", "sequenceId"}, announced
    assert rest == "".join(replay), (announced, rest[:500])
    raw.seen.append(announced)
    return raw


async def disconnected(watcher: Raw, connection_id: str, timeout: float = TIMEOUT) -> str:
    """The reason the hub's on_disconnected gave for ``connection_id``."""
    message = await watcher.until(
        lambda m: m.get("target") == "Lifecycle" and m["arguments"][:2] == ["disconnected", connection_id], timeout
    )
    reason = message["arguments"][2]
    assert isinstance(reason, str)
    return reason


# ---------------------------------------------------------------- 1. negotiate


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("negotiateVersion=1&useStatefulReconnect=true", True),
        ("negotiateVersion=1&usestatefulreconnect=true", True),
        ("negotiateVersion=1&USESTATEFULRECONNECT=True", True),
        ("negotiateVersion=1", False),
        ("negotiateVersion=1&useStatefulReconnect=false", False),
        ("negotiateVersion=1&useStatefulReconnect=", False),
        ("negotiateVersion=1&useStatefulReconnect=yes", False),
    ],
)
async def test_negotiate_reports_stateful_reconnect_only_when_asked(clients, query, expected):
    body = await clients.negotiate("alice", query)
    assert body["useStatefulReconnect"] is expected
    assert body["negotiateVersion"] == 1 and isinstance(body["connectionToken"], str)


async def test_negotiate_version_0_has_no_stateful_reconnect(clients):
    """Version 0 has no secret token (the id is the token): no stateful reconnect, no key."""
    body = await clients.negotiate("alice", "useStatefulReconnect=true")
    assert "useStatefulReconnect" not in body and "connectionToken" not in body


async def test_a_server_that_does_not_allow_it_answers_false_and_never_acks(plain_server, live_users):
    """Asked, but not allowed: false; a version-2 handshake then gets a plain connection (no Ack, no Sequence)."""
    clients = Clients(plain_server, live_users)
    try:
        body = await clients.negotiate("alice", STATEFUL_QUERY)
        assert body["useStatefulReconnect"] is False
        raw = Raw(await clients.socket(body["connectionToken"], "alice"))
        await raw.ws.send(HANDSHAKE_V2)
        assert await raw.frame() == HANDSHAKE_OK
        assert await raw.call("Echo", "x", invocation_id="1") == "x"
        assert [m for m in await raw.silence(2.5) if m.get("type") in (8, 9)] == []
        assert [m for m in raw.seen if m.get("type") in (8, 9)] == []
    finally:
        await clients.close_all()


# ---------------------------------------------------------------- 2. no stateful reconnect without both halves


@pytest.mark.parametrize(
    ("ask", "handshake"),
    [(True, HANDSHAKE_V1), (False, HANDSHAKE_V2)],
    ids=["stateful-token-version-1-handshake", "plain-token-version-2-handshake"],
)
async def test_without_both_the_token_and_version_2_there_is_no_stateful_reconnect(clients, ask, handshake):
    """No Ack or Sequence is ever sent, the client's are ignored, and a dropped socket ends the connection."""
    watcher = await clients.watcher()
    raw, body = await clients.start("alice", ask=ask, handshake=handshake)
    assert await raw.call("JoinGroup", "v1-room", invocation_id="j") is True
    sender = await clients.plain("bob")
    await sender.send(*(invocation("SendToGroup", "v1-room", f"m{i}") for i in range(3)))
    await raw.until(lambda m: m.get("arguments") == ["group", "m2"])
    # A stateful client's Ack (far beyond what was sent) and Sequence: ignored, not a protocol error.
    await raw.send(ack(99), sequence(99))
    assert await raw.call("Echo", "after", invocation_id="e") == "after"
    rest = await raw.silence(2.5)  # the server acknowledges within about a second, if it does
    assert [m for m in raw.seen if m.get("type") in (8, 9)] == [], rest
    # Not resumable: a second socket with the token, while the connection lives, is a duplicate.
    assert await clients.refused(body["connectionToken"], "alice") == (409, "Connection ID already in use")
    assert await raw.call("Echo", "still", invocation_id="e2") == "still"
    raw.drop()
    code = ABRUPT_CLOSE_CODE[clients.server.kind]
    assert await disconnected(watcher, body["connectionId"]) == f"The client went away (close code {code})."
    await asyncio.sleep(0.3)  # (the registry is cleared right after on_disconnected)
    assert await clients.refused(body["connectionToken"], "alice") == NO_CONNECTION


# ---------------------------------------------------------------- 3. resume


async def test_a_dropped_socket_resumes_with_sequence_and_the_unacknowledged_messages(clients):
    raw, body = await clients.start("alice")
    assert await raw.call("JoinGroup", "resume-room", invocation_id="j") is True
    sender = await clients.plain("bob")
    await sender.send(*(invocation("SendToGroup", "resume-room", f"m{i}") for i in range(3)))
    await raw.until(lambda m: m.get("arguments") == ["group", "m2"])
    # The server acknowledges the client's one message (JoinGroup) on its own, once.
    assert await acked(raw, 1) == [1]
    replay = list(raw.tracked)
    assert len(replay) == 4  # the JoinGroup completion and three group messages, none acknowledged
    raw.drop()
    await clients.logged(f"connection {body['connectionId']} lost its socket")
    # Sent to the group while the connection has no socket: kept for it.
    await sender.send(*(invocation("SendToGroup", "resume-room", f"down{i}") for i in range(3)))
    assert await sender.call("Echo", "sync", invocation_id="sync") == "sync"

    again = await resumed(clients, body, "alice", replay)
    assert again.seen[-1] == sequence(1)
    # The client's side: its next message is number 2 (the server acknowledged 1).
    await again.send(sequence(2))
    assert await again.call("GetConnectionId", invocation_id="id") == body["connectionId"]
    await sender.send(invocation("SendToGroup", "resume-room", "after"))
    await again.until(lambda m: m.get("arguments") == ["group", "after"])
    # After the replay (checked as text above): what came meanwhile, once and in order, then the new one.
    assert received(again) == ["down0", "down1", "down2", "after"]
    # (After a reattach the server may first acknowledge again what it had: 1.)
    assert set(await acked(again, 2)) <= {1, 2}


# ---------------------------------------------------------------- 4. acks


async def test_acks_both_ways_and_a_resume_replays_only_what_came_after_the_ack(clients):
    raw, body = await clients.start("alice")
    sent_at = time.monotonic()
    await raw.send(*(invocation("Echo", text, invocation_id=f"e{i}") for i, text in enumerate("abc")))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e2")
    assert await acked(raw, 3) == [3]  # the three came in one frame: one Ack covers them
    assert time.monotonic() - sent_at < 2.5
    assert acks(await raw.silence(1.5)) == []  # nothing new: no second Ack
    assert len(raw.tracked) == 3

    # The client acknowledges the three completions; the Echo after it shows the Ack was read first.
    await raw.send(ack(3), invocation("Echo", "d", invocation_id="e3"))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e3")
    await raw.send(invocation("Echo", "e", invocation_id="e4"))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e4")
    assert (await acked(raw, 5))[0] == 3
    replay = raw.tracked[3:]
    raw.drop()

    again = await resumed(clients, body, "alice", replay)
    assert again.seen[-1] == sequence(4)
    await again.send(sequence(6), invocation("Echo", "f", invocation_id="e5"))
    assert (await again.until(lambda m: m.get("type") == 3)) == {"type": 3, "invocationId": "e5", "result": "f"}
    assert set(await acked(again, 6)) <= {5, 6}

    # A second drop: the numbering goes on from the first socket's (e5's completion was number 6).
    await again.send(ack(6), invocation("Echo", "g", invocation_id="e6"))
    await again.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e6")
    await acked(again, 7)
    assert len(again.tracked) == 2  # the completions of e5 and e6 (the replay is not counted here)
    again.drop()
    third = await resumed(clients, body, "alice", again.tracked[1:])
    assert third.seen[-1] == sequence(7)
    await third.send(sequence(8))
    assert await third.call("Echo", "h", invocation_id="e7") == "h"


async def test_an_ack_of_part_of_the_buffer_replays_the_rest(clients):
    """Ack{2} of 4 sent: the resume starts at 3."""
    raw, body = await clients.start("alice")
    await raw.send(*(invocation("Echo", i, invocation_id=f"e{i}") for i in range(4)))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e3")
    assert await acked(raw, 4) == [4]
    # The Echo after the Ack shows it was read; its completion (5) joins the replay.
    await raw.send(ack(2), invocation("Echo", 4, invocation_id="e4"))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "e4")
    await acked(raw, 5)
    replay = raw.tracked[2:]
    assert len(replay) == 3
    raw.drop()
    again = await resumed(clients, body, "alice", replay)
    assert again.seen[-1] == sequence(3)
    await again.send(sequence(6))
    assert await again.call("Echo", "ok", invocation_id="after") == "ok"


# ---------------------------------------------------------------- 5. backpressure


async def _round(raw: Raw, start: int) -> list[str]:
    """The numbered records that arrive until the server goes quiet (1.5 s), from ``raw.tracked[start]`` on."""
    await raw.silence(1.5)
    return raw.tracked[start:]


def _fills_the_buffer_exactly(batch: list[str]) -> None:
    """The writer stops after the record that reached the bound: all but the last stay under it."""
    sizes = [len(text) for text in batch]
    assert sum(sizes[:-1]) < BUFFER <= sum(sizes), (len(sizes), sum(sizes), sizes[-3:])


async def test_a_client_that_never_acks_holds_the_server_stream_at_the_buffer_size(clients):
    """Counter(1200): ~40-character items; about 500 fit in 20,000; each Ack lets the next round through."""
    raw, _body = await clients.start("alice")
    count = 1200
    await raw.send({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [count, 0]})
    first = await _round(raw, 0)
    _fills_the_buffer_exactly(first)
    assert len(first) < count
    assert acks(raw.seen) == [1]  # the server's Ack is not held back by its full buffer

    await raw.send(ack(len(raw.tracked)))
    second = await _round(raw, len(first))
    _fills_the_buffer_exactly(second)

    await raw.send(ack(len(raw.tracked)))
    await raw.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "s")
    items = [m["item"] for m in raw.seen if m.get("type") == 2]
    assert items == list(range(count))
    assert sum(len(text) for text in raw.tracked[len(first) + len(second) :]) < BUFFER


async def test_a_client_that_never_acks_holds_group_messages_at_the_buffer_size(clients):
    """15 group messages of 3,057 characters: the JoinGroup completion and 7 of them, then 7, then the last."""
    raw, _body = await clients.start("alice")
    assert await raw.call("JoinGroup", "full-room", invocation_id="j") is True
    sender = await clients.plain("bob")
    payloads = [f"{i:02d}" + "x" * 3000 for i in range(15)]
    await sender.send(*(invocation("SendToGroup", "full-room", payload) for payload in payloads))
    first = await _round(raw, 0)
    _fills_the_buffer_exactly(first)
    assert len(first) == 8

    await raw.send(ack(len(raw.tracked)))
    second = await _round(raw, len(first))
    _fills_the_buffer_exactly(second)
    assert len(second) == 7

    await raw.send(ack(len(raw.tracked)))
    await raw.until(lambda m: m.get("arguments", [None, ""])[1] == payloads[-1])
    assert received(raw) == payloads


async def test_a_full_buffer_is_replayed_whole_and_the_stream_goes_on_after_a_resume(clients):
    """Counter(700) held at the bound, the socket dropped: the resume replays the ~491 items, then the rest follows."""
    raw, body = await clients.start("alice")
    count = 700
    await raw.send({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [count, 0]})
    first = await _round(raw, 0)
    _fills_the_buffer_exactly(first)
    raw.drop()

    again = await resumed(clients, body, "alice", first)
    assert again.seen[-1] == sequence(1)
    # The client's StreamInvocation was acknowledged (1); it acknowledges everything replayed.
    await again.send(sequence(2), ack(len(first)))
    await again.until(lambda m: m.get("type") == 3 and m.get("invocationId") == "s")
    items = [m["item"] for m in again.seen if m.get("type") == 2]
    assert items == list(range(len(first), count))


# ---------------------------------------------------------------- 6. bad Ack and Sequence records


BAD_RECORDS = [
    pytest.param(ack(2), "Ack for message 2, but only 1 were sent.", id="ack-from-the-future"),
    pytest.param(sequence(3), "Sequence ID greater than amount of messages we've received.", id="sequence-ahead"),
    pytest.param(sequence(0), "Sequence ID must be at least 1, got 0.", id="sequence-zero"),
    pytest.param(sequence(-4), "Sequence ID must be at least 1, got -4.", id="sequence-negative"),
    pytest.param(sequence("2"), "Property 'sequenceId' has the wrong type.", id="sequence-string"),
    pytest.param(ack(1.5), "Property 'sequenceId' has the wrong type.", id="ack-float"),
    pytest.param(ack(True), "Property 'sequenceId' has the wrong type.", id="ack-bool"),
    pytest.param({"type": 8}, "Missing required property 'sequenceId'.", id="ack-without-id"),
    pytest.param(sequence(None), "Missing required property 'sequenceId'.", id="sequence-null"),
]


@pytest.mark.parametrize(("bad", "error"), BAD_RECORDS)
async def test_a_bad_ack_or_sequence_gets_a_close_message(clients, bad, error):
    """After one Echo each way (1 sent, 1 received): the exact Close message, a close frame, and the server lives on."""
    raw, body = await clients.start("alice")
    assert await raw.call("Echo", "x", invocation_id="1") == "x"
    await raw.send(bad)
    messages, code = await raw.closed_by_server()
    assert [m for m in messages if m.get("type") != 8] == [protocol_close(error)]
    assert code == 1000
    await clients.serves_new_connections()


async def test_a_resumed_client_announcing_more_than_it_sent_is_closed(clients):
    """Sequence{3} on the resumed socket of a client that sent one message: closed, and not held."""
    watcher = await clients.watcher()
    raw, body = await clients.start("alice")
    assert await raw.call("Echo", "x", invocation_id="1") == "x"
    replay = list(raw.tracked)
    raw.drop()
    again = await resumed(clients, body, "alice", replay)
    await again.send(sequence(3))
    messages, code = await again.closed_by_server()
    assert messages == [protocol_close("Sequence ID greater than amount of messages we've received.")]
    assert code == 1000
    reason = await disconnected(watcher, body["connectionId"])
    assert "Sequence ID greater" in reason
    await asyncio.sleep(0.3)
    assert await clients.refused(body["connectionToken"], "alice") == NO_CONNECTION
    await clients.serves_new_connections()


# ---------------------------------------------------------------- 7. before the Sequence, and duplicates


async def test_messages_before_the_sequence_are_dropped_and_duplicates_are_not_run_again(clients):
    raw, body = await clients.start("alice")
    assert await raw.call("CountCalls", invocation_id="c1") == 1
    replay = list(raw.tracked)
    raw.drop()

    again = await resumed(clients, body, "alice", replay)
    assert again.seen[-1] == sequence(1)
    # Before the client's Sequence: dropped (not run, not answered), whatever it is.
    await again.send(invocation("CountCalls", invocation_id="early"), ack(99))
    # The client did not see the server's Ack: it resends its message 1 (a duplicate), then a new one.
    await again.send(
        sequence(1), invocation("CountCalls", invocation_id="c1"), invocation("CountCalls", invocation_id="c2")
    )
    completion = await again.until(lambda m: m.get("type") == 3)
    assert completion == {"type": 3, "invocationId": "c2", "result": 2}  # c1 ran once, "early" never
    later = await again.silence(2.5)
    assert [m for m in later if m.get("type") == 3] == []
    assert acks(again.seen)[-1:] == [2] and set(acks(again.seen)) <= {1, 2}


# ---------------------------------------------------------------- 8. the window


async def test_a_client_that_comes_back_after_the_window_is_refused(clients):
    watcher = await clients.watcher()
    raw, body = await clients.start("alice")
    assert await raw.call("JoinGroup", "late-room", invocation_id="j") is True
    dropped_at = time.monotonic()
    raw.drop()
    reason = await disconnected(watcher, body["connectionId"], timeout=WINDOW + 5)
    waited = time.monotonic() - dropped_at
    assert reason == "The client did not reconnect: the client did not reconnect in time."
    assert WINDOW - 0.5 <= waited <= WINDOW + 3, waited
    await asyncio.sleep(0.3)
    assert await clients.refused(body["connectionToken"], "alice") == NO_CONNECTION


# ---------------------------------------------------------------- 9. held connections per user


async def test_a_user_holding_too_many_loses_the_oldest_at_once(clients):
    """carol drops three connections (the cap is two): the first ends at once, the two others resume."""
    watcher = await clients.watcher()
    started = [await clients.start("carol") for _ in range(3)]
    for raw, body in started:
        assert await raw.call("GetConnectionId", invocation_id="id") == body["connectionId"]
    for raw, body in started:
        raw.drop()
        await clients.logged(f"connection {body['connectionId']} lost its socket")
    oldest = started[0][1]
    reason = await disconnected(watcher, oldest["connectionId"], timeout=2)
    assert reason == f"The client did not reconnect: its user holds more than {HELD} connections waiting to reconnect."
    await asyncio.sleep(0.3)
    assert await clients.refused(oldest["connectionToken"], "carol") == NO_CONNECTION
    for raw, body in started[1:]:
        again = await resumed(clients, body, "carol", list(raw.tracked))
        assert again.seen[-1] == sequence(1)
        await again.send(sequence(2))
        assert await again.call("GetConnectionId", invocation_id="again") == body["connectionId"]


# ---------------------------------------------------------------- 10. someone else's token


@pytest.mark.parametrize("intruder", ["bob", None], ids=["another-user", "anonymous"])
async def test_another_user_cannot_resume_the_connection(clients, intruder):
    raw, body = await clients.start("alice")
    assert await raw.call("Echo", "x", invocation_id="1") == "x"
    replay = list(raw.tracked)
    raw.drop()
    await clients.logged(f"connection {body['connectionId']} lost its socket")
    assert await clients.refused(body["connectionToken"], intruder) == NO_CONNECTION
    again = await resumed(clients, body, "alice", replay)  # the owner still can
    await again.send(sequence(2))
    assert await again.call("GetConnectionId", invocation_id="id") == body["connectionId"]


# ---------------------------------------------------------------- 11. a resume while the old socket is open


async def test_a_resume_while_the_old_socket_is_open_replaces_it(clients):
    raw, body = await clients.start("alice")
    assert await raw.call("JoinGroup", "twice-room", invocation_id="j") is True
    sender = await clients.plain("bob")
    await sender.send(invocation("SendToGroup", "twice-room", "before"))
    await raw.until(lambda m: m.get("arguments") == ["group", "before"])
    replay = list(raw.tracked)

    again = await resumed(clients, body, "alice", replay)  # the old socket was never closed
    assert again.seen[-1] == sequence(1)
    messages, code = await raw.closed_by_server()
    assert [m for m in messages if m.get("type") in TRACKED] == []
    assert code == 1000
    await again.send(sequence(2))
    assert await again.call("GetConnectionId", invocation_id="id") == body["connectionId"]
    await sender.send(invocation("SendToGroup", "twice-room", "after"))
    await again.until(lambda m: m.get("arguments") == ["group", "after"])
    assert received(again) == ["after"]


# ---------------------------------------------------------------- an Ack lost with the old socket


async def test_the_server_acknowledges_again_on_a_resumed_socket(clients):
    """The Ack{1} written to the old socket was lost with it (as bytes in flight are when TCP dies): the client
    resends message 1 after its Sequence, and must be told again that 1 arrived, or it keeps it (and, with a full
    buffer, waits for that Ack forever)."""
    raw, body = await clients.start("alice")
    assert await raw.call("Echo", "x", invocation_id="1") == "x"
    await acked(raw, 1)  # written on the old socket; this client acts as if it never arrived
    replay = list(raw.tracked)
    raw.drop()
    again = await resumed(clients, body, "alice", replay)
    await again.send(sequence(1), invocation("Echo", "x", invocation_id="1"))
    assert await acked(again, 1) == [1]
    assert [m for m in again.seen if m.get("type") == 3] == []  # the duplicate was not run again


# ---------------------------------------------------------------- a replaced socket is no held connection


async def test_replacing_a_live_socket_does_not_evict_a_held_connection(clients):
    """carol holds two dropped connections (the cap) and replaces the socket of a third that never dropped:
    that third one is never waiting for its client, so neither held connection may be ended."""
    started = [await clients.start("carol") for _ in range(3)]
    for raw, body in started:
        assert await raw.call("GetConnectionId", invocation_id="id") == body["connectionId"]
    for raw, body in started[:2]:
        raw.drop()
        await clients.logged(f"connection {body['connectionId']} lost its socket")
    live_raw, live = started[2]
    replaced = await resumed(clients, live, "carol", list(live_raw.tracked))  # its old socket is still open
    await replaced.send(sequence(2))
    assert await replaced.call("GetConnectionId", invocation_id="again") == live["connectionId"]
    for raw, body in started[:2]:
        again = await resumed(clients, body, "carol", list(raw.tracked))
        await again.send(sequence(2))
        assert await again.call("GetConnectionId", invocation_id="again") == body["connectionId"]
