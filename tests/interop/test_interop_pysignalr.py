"""Interop with the real pysignalr client (negotiate v0, id=connectionId, cookies, skip negotiation)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

TIMEOUT = 5.0


class PyClient:
    """One pysignalr connection running as a background task, recording ``Receive`` events."""

    def __init__(
        self, url: str, *, cookie: str | None = None, skip_negotiation: bool = False, protocol: Any = None
    ) -> None:
        headers = {"Cookie": cookie} if cookie else None
        #: The hub protocol object (None: pysignalr's default, JSON).
        self.protocol = protocol
        options = {"protocol": protocol} if protocol is not None else {}
        self.client = SignalRClient(url, headers=headers, retry_count=1, **options)
        if skip_negotiation:
            # No public option: see toolchain-notes §3b (needs a ws:// URL too).
            self.client._transport._skip_negotiation = True
        self.received: list[list[Any]] = []
        self.errors: list[CompletionMessage] = []
        self.connection_id: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._changed = asyncio.Event()
        self.client.on_open(self._on_open)
        self.client.on("Receive", self._on_receive)
        self.client.on_error(self._on_error)

    async def _on_open(self) -> None:
        self._opened.set()

    async def _on_receive(self, arguments: list[Any]) -> None:
        self.received.append(list(arguments))
        self._changed.set()

    async def _on_error(self, message: CompletionMessage) -> None:
        self.errors.append(message)

    @property
    def transport_url(self) -> str:
        """The URL the transport connected to (after negotiate: with ``id=``)."""
        return str(self.client._transport._url)

    async def start(self) -> None:
        """Run the client until its handshake is done, then learn its connection id from the server."""
        self.task = asyncio.create_task(self.client.run())
        opened = asyncio.ensure_future(self._opened.wait())
        try:
            done, _ = await asyncio.wait({opened, self.task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if self.task in done:
            self.task.result()  # raises what ended the client
            raise AssertionError("pysignalr's run() returned before the connection opened")
        if not self._opened.is_set():
            raise AssertionError(f"pysignalr did not connect to {self.transport_url} within {TIMEOUT}s")
        # A round trip also guarantees the server registered the connection (groups, users).
        self.connection_id = await self.call("GetConnectionId")

    async def invoke(self, method: str, *args: Any) -> CompletionMessage:
        """Invoke ``method`` with an invocation id and return the server's Completion message."""
        future: asyncio.Future[CompletionMessage] = asyncio.get_running_loop().create_future()

        async def on_completion(message: Any) -> None:
            if not future.done():
                future.set_result(message)

        await self.client.send(method, list(args), on_invocation=on_completion)
        return await asyncio.wait_for(future, TIMEOUT)

    async def call(self, method: str, *args: Any) -> Any:
        """Invoke ``method`` and return its result, failing on a Completion error."""
        message = await self.invoke(method, *args)
        assert message.error is None, f"{method} failed: {message.error}"
        return message.result

    async def wait_for(self, predicate: Callable[[list[list[Any]]], bool]) -> list[list[Any]]:
        """Wait (bounded) until ``predicate(received)`` holds; return the events."""

        async def until() -> None:
            while not predicate(self.received):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"condition not met; received: {self.received}") from None
        return self.received

    async def barrier(self) -> list[list[Any]]:
        """Events received before a fresh ``SendToCaller`` marker (which is then removed).

        The server appends to one connection's outbox in order, so anything sent to this
        connection before the marker was requested has arrived once the marker has.
        """
        marker = f"barrier-{uuid.uuid4()}"
        await self.call("SendToCaller", marker)
        await self.wait_for(lambda events: ["caller", marker] in events)
        index = self.received.index(["caller", marker])
        before = self.received[:index]
        del self.received[index]
        return before

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, TIMEOUT)
        self.task = None


@pytest.fixture
async def pyclients(live_server_process) -> AsyncIterator[Callable[..., Any]]:
    """A factory ``await connect(cookie=..., skip_negotiation=..., url=...)``; every client is stopped afterwards."""
    started: list[PyClient] = []

    async def connect(*, cookie: str | None = None, skip_negotiation: bool = False, url: str | None = None) -> PyClient:
        client = PyClient(
            url or live_server_process.http_url + "/interop", cookie=cookie, skip_negotiation=skip_negotiation
        )
        started.append(client)
        await client.start()
        return client

    try:
        yield connect
    finally:
        for client in started:
            await client.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_echo_round_trip_over_negotiate_v0(live_server_process, live_users, pyclients):
    client = await pyclients()
    assert await client.call("Echo", "hi") == "hi"
    assert await client.call("Echo", {"nested": [1, 2.5, None, "é"]}) == {"nested": [1, 2.5, None, "é"]}
    # pysignalr negotiated without negotiateVersion (v0) and used connectionId as id=.
    query = parse_qs(urlsplit(client.transport_url).query)
    assert urlsplit(client.transport_url).scheme == "ws"
    assert query["id"] == [client.connection_id]
    assert client.errors == []


async def test_cookie_authenticates_the_connection(live_server_process, live_users, pyclients):
    alice = await pyclients(cookie=live_users["alice"])
    anonymous = await pyclients()
    assert await alice.call("GetUserIdentifier") == "alice"
    assert await anonymous.call("GetUserIdentifier") is None


async def test_group_send_reaches_members_only(live_server_process, live_users, pyclients):
    group = unique("room")
    sender = await pyclients(cookie=live_users["alice"])
    member = await pyclients(cookie=live_users["bob"])
    outsider = await pyclients(cookie=live_users["carol"])
    assert await member.call("JoinGroup", group) is True
    await sender.call("SendToGroup", group, "hello group")
    assert await member.wait_for(lambda events: ["group", "hello group"] in events) == [["group", "hello group"]]
    assert await outsider.barrier() == []
    assert await sender.barrier() == []


async def test_send_to_user_reaches_every_connection_of_that_user(live_server_process, live_users, pyclients):
    alice_1 = await pyclients(cookie=live_users["alice"])
    alice_2 = await pyclients(cookie=live_users["alice"])
    bob = await pyclients(cookie=live_users["bob"])
    await bob.call("SendToUser", "alice", "for alice")
    for alice in (alice_1, alice_2):
        assert await alice.wait_for(lambda events: bool(events)) == [["user", "for alice"]]
    assert await bob.barrier() == []


async def test_errors_arrive_as_completions_and_the_connection_survives(live_server_process, live_users, pyclients):
    client = await pyclients()

    failed = await client.invoke("Fail", "nope, not today")
    assert failed.result is None
    assert failed.error == "An unexpected error occurred invoking 'Fail' on the server. HubException: nope, not today"

    unknown = await client.invoke("Nope")
    assert unknown.error == "Unknown hub method 'Nope'"

    wrong_count = await client.invoke("Add", 1)
    assert wrong_count.error == "Failed to invoke 'Add' due to an error on the server."

    crashed = await client.invoke("Crash")
    assert crashed.error == "An unexpected error occurred invoking 'Crash' on the server."
    assert "secret internal detail" not in crashed.error

    assert [message.error for message in client.errors] == [
        failed.error,
        unknown.error,
        wrong_count.error,
        crashed.error,
    ]
    assert await client.call("Add", 2, 3) == 5
    assert await client.call("Echo", "still alive") == "still alive"


async def test_skip_negotiation(live_server_process, live_users, pyclients):
    client = await pyclients(url=live_server_process.ws_url + "/interop", skip_negotiation=True)
    # No negotiate happened: the URL has no id=, and the server made up a 22-char connection id.
    assert "id" not in parse_qs(urlsplit(client.transport_url).query)
    assert isinstance(client.connection_id, str) and len(client.connection_id) == 22
    assert await client.call("Echo", "skipped") == "skipped"
    other = await pyclients(url=live_server_process.ws_url + "/interop", skip_negotiation=True)
    assert other.connection_id != client.connection_id


async def test_hub_context_send_from_a_view_reaches_the_group(live_server_process, live_users, pyclients):
    group = unique("ctx")
    member = await pyclients(cookie=live_users["alice"])
    outsider = await pyclients()
    assert await member.call("JoinGroup", group) is True
    reply = await asyncio.to_thread(
        live_server_process.post_json, "/ctx/send", {"kind": "group", "name": group, "message": "from a view"}
    )
    assert reply == {"ok": True}
    assert await member.wait_for(lambda events: bool(events)) == [["ctx-group", "from a view"]]
    assert await outsider.barrier() == []


async def test_hub_context_group_add_and_remove_by_connection_id(live_server_process, live_users, pyclients):
    group = unique("managed")
    client = await pyclients(cookie=live_users["bob"])
    connection_id = client.connection_id
    assert connection_id

    async def post(path: str, body: dict[str, Any]) -> Any:
        return await asyncio.to_thread(live_server_process.post_json, path, body)

    assert await post("/ctx/group", {"action": "add", "connection_id": connection_id, "group": group}) == {"ok": True}
    assert await post("/ctx/send", {"kind": "group", "name": group, "message": "while a member"}) == {"ok": True}
    assert await client.wait_for(lambda events: bool(events)) == [["ctx-group", "while a member"]]

    assert await post("/ctx/group", {"action": "remove", "connection_id": connection_id, "group": group}) == {
        "ok": True
    }
    assert await post("/ctx/send", {"kind": "group", "name": group, "message": "after removal"}) == {"ok": True}
    # The same send path addressed to the connection itself marks the end of what could arrive.
    assert await post("/ctx/send", {"kind": "client", "name": connection_id, "message": "marker"}) == {"ok": True}
    events = await client.wait_for(lambda events: ["ctx-client", "marker"] in events)
    assert events == [["ctx-group", "while a member"], ["ctx-client", "marker"]]

    # An unknown connection id is reported, not silently accepted.
    assert await post("/ctx/group", {"action": "add", "connection_id": "no-such-connection", "group": group}) == {
        "ok": False
    }
