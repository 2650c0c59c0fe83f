"""Relaying HTTP-transport requests between two server processes on one Redis: the edge cases.

- an event stream's POSTs reaching the other process while the token is still fresh, on a site
  without long polling (the POST must be relayed, not treated as a long-polling start);
- a relayed poll whose relaying process loses its last connection of the hub meanwhile (its
  lifetime manager stops): the owner's answer still arrives;
- a request for a connection nobody owns: 404 within GROUP_ACTION_TIMEOUT, then at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from tests.live import ServerProcess

pytestmark = pytest.mark.timeout(90)

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


def _invocation(target: str, *arguments: object, invocation_id: str | None = None) -> str:
    message: dict[str, object] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message) + RS


@pytest.fixture(scope="module")
def pair(django_db_setup, redis_url, tmp_path_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Processes A and B on one Redis, serving WebSockets and Server-Sent Events (no long polling)
    for the chat hub, and every transport for the others."""
    logdir = tmp_path_factory.mktemp("http-relay")
    hub_settings = {"TRANSPORTS": {"chat": ["WebSockets", "ServerSentEvents"]}, "GROUP_ACTION_TIMEOUT": 2}
    env = {"SIGNALR_TEST_REDIS_URL": redis_url, "SIGNALR_TEST_SETTINGS": json.dumps(hub_settings)}
    db = str(settings.DATABASES["default"]["NAME"])
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(logdir / f"{name}.log", db, extra_env=env))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


async def _negotiate(session: aiohttp.ClientSession, server: ServerProcess, hub: str) -> str:
    async with session.post(f"{server.http_url}/{hub}/negotiate?negotiateVersion=1") as response:
        assert response.status == 200
        return str((await response.json())["connectionToken"])


async def _events(response: aiohttp.ClientResponse, want: str, timeout: float = 10) -> str:
    """Read the event stream until ``want`` shows; what was read."""
    seen = ""
    deadline = time.monotonic() + timeout
    while want not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{want!r} did not arrive; got {seen!r}"
        chunk = await asyncio.wait_for(response.content.readany(), remaining)
        assert chunk, f"the stream ended before {want!r}; got {seen!r}"
        seen += chunk.decode()
    return seen


async def test_event_stream_posts_to_the_other_process_without_long_polling(pair, session):
    """chat offers no long polling: a POST on B with a fresh token is relayed to A's event stream."""
    a, b = pair
    token = await _negotiate(session, a, "chatHub")
    headers = {"Accept": "text/event-stream"}
    async with session.get(f"{a.http_url}/chatHub?id={token}", headers=headers) as stream:
        assert stream.status == 200
        await _events(stream, ":")
        async with session.post(f"{b.http_url}/chatHub?id={token}", data=HANDSHAKE) as posted:
            assert posted.status == 200, await posted.text()
        await _events(stream, "data: {}" + RS)
        async with session.post(f"{b.http_url}/chatHub?id={token}", data=_invocation("NoSuch", invocation_id="1")):
            pass
        assert "Unknown hub method" in await _events(stream, '"invocationId":"1"')


async def test_a_relayed_poll_survives_its_process_losing_its_last_connection(pair, session):
    """B relays a poll while holding one WebSocket of the hub; that socket closes (B's manager stops)
    before the owner A answers: the answer still reaches the poll."""
    a, b = pair
    token = await _negotiate(session, a, "interop")
    url_a, url_b = f"{a.http_url}/interop?id={token}", f"{b.http_url}/interop?id={token}"
    async with session.get(url_a) as first:
        assert first.status == 200
    async with session.post(url_a, data=HANDSHAKE) as posted:
        assert posted.status == 200
    async with session.get(url_a) as answered:
        assert (await answered.read()).decode() == "{}" + RS
    async with session.post(url_a, data=_invocation("JoinGroup", "relay", invocation_id="j")):
        pass
    async with session.get(url_a) as joined:
        assert '"invocationId":"j"' in (await joined.read()).decode()

    async with connect(f"{b.ws_url}/interop") as socket_on_b:  # B's manager runs while this lives
        await socket_on_b.send(HANDSHAKE)
        assert await socket_on_b.recv() == "{}" + RS
        poll = asyncio.ensure_future(session.get(url_b))
        await asyncio.sleep(0.5)  # the relayed poll waits on A
    await asyncio.sleep(0.5)  # B's last connection of the hub is gone: its manager stops
    async with connect(f"{a.ws_url}/interop") as sender:
        await sender.send(HANDSHAKE)
        assert await sender.recv() == "{}" + RS
        await sender.send(_invocation("SendToGroup", "relay", "after the stop", invocation_id="s"))
        assert '"invocationId":"s"' in str(await sender.recv())
    response = await asyncio.wait_for(poll, 10)
    async with response:
        assert response.status == 200
        assert "after the stop" in (await response.read()).decode()
    async with session.delete(url_a) as deleted:
        assert deleted.status == 202


async def test_a_connection_nobody_owns_is_404_within_the_action_timeout_then_at_once(pair, session):
    a, b = pair
    token = await _negotiate(session, a, "interop")
    url_a, url_b = f"{a.http_url}/interop?id={token}", f"{b.http_url}/interop?id={token}"
    async with session.get(url_a) as first:
        assert first.status == 200
    async with session.delete(url_a) as deleted:
        assert deleted.status == 202
    for _ in range(3):  # the ended connection answers its last polls, then is forgotten
        async with session.get(url_a) as polled:
            if polled.status == 404:
                break
    started = time.monotonic()
    async with session.get(url_b) as relayed:
        assert relayed.status == 404
    first_took = time.monotonic() - started
    assert first_took < 2 + 1.5, f"a relayed poll for a dead connection took {first_took:.1f} s"
    started = time.monotonic()
    async with session.post(url_b, data=HANDSHAKE) as relayed_post:
        assert relayed_post.status == 404
    assert time.monotonic() - started < 0.5, "B asked the other processes again"


@pytest.mark.parametrize("where", ["owner", "relayed"])
async def test_concurrent_posts_of_one_connection_are_bounded(pair, session, where):
    """A connection that stopped reading (its invocations queue) gets one POST read at a time, a few
    waiting, and 409 for the rest — on the owner and on a relaying process alike — never a 5xx."""
    a, b = pair
    token = await _negotiate(session, a, "interop")
    url_a = f"{a.http_url}/interop?id={token}"
    url = url_a if where == "owner" else f"{b.http_url}/interop?id={token}"
    async with session.get(url_a) as first:
        assert first.status == 200
    async with session.post(url_a, data=HANDSHAKE) as posted:
        assert posted.status == 200
    # 200 slow invocations (50 ms each, one at a time): the connection stops reading for ~10 s (within
    # DISCONNECT_TIMEOUT, 15 s: a connection without a poll for that long is ended).
    async with session.post(url_a, data=_invocation("Slow", "x") * 200) as posted:
        assert posted.status == 200

    async def post() -> int:
        async with session.post(url, data='{"type":6}' + RS) as response:
            return response.status

    statuses = await asyncio.gather(*(post() for _ in range(16)))
    assert set(statuses) <= {200, 409}, statuses
    assert statuses.count(409) >= 16 - 4 - 1 - 4 - 1, statuses  # waiting + read + queued (+ one in hand)
    async with session.delete(url_a) as deleted:
        assert deleted.status == 202
