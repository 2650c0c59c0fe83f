"""The one request/reply mechanism over the channel layer.

A request is a layer message sent to a layer group with ``reply_to`` and ``request_id``; each
process that handles it answers with one :data:`~.messages.REPLY` message (:func:`answer`):
``{"type", "request_id", "channel", "process", "error", "body"}``. Two ways to wait:

- :func:`ask_owner`: a command for the one process that owns a connection (add it to a group,
  abort it); the first answer wins, and ``None`` means nobody owned it within the timeout.
- :func:`gather`: a query or command for every member of a layer group (count members, apply a
  revocation); it waits until every member answered — its :class:`Quorum`, as far as the layer
  can tell — or the timeout.

Answers come back on a fresh channel, or, in a server process, on the manager's own channel
through a :class:`ReplyInbox` (no channel to create, subscribe to and release per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from signalr_groups import metrics
from signalr_groups.backplane.layer import in_memory_members, is_redis_core, is_redis_pubsub, release_channel
from signalr_groups.backplane.liveness import live_channels
from signalr_groups.backplane.messages import PROCESS, REPLY
from signalr_groups.backplane.redis_internals import (
    ChannelsRedisIncompatibleError,
    core_group_members,
    pubsub_subscriber_count,
)

logger = logging.getLogger(__name__)

#: The answer type of releases before the redesign (fields at the top level), still read.
LEGACY_ACK = "signalr.ack"
_ENVELOPE = frozenset({"type", "request_id", "channel", "process", "error"})


@dataclass(frozen=True)
class Reply:
    """One process's answer to a request."""

    channel: str
    process: str
    error: str | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: Any) -> Reply | None:
        """Read a :data:`REPLY` layer message (or an earlier release's ``signalr.ack``); None for anything else."""
        if not isinstance(message, dict):
            return None
        if message.get("type") == LEGACY_ACK:
            # Processes of the previous release answer with their fields at the top level: read
            # them during a rolling upgrade.
            body: Any = {key: value for key, value in message.items() if key not in _ENVELOPE}
        elif message.get("type") == REPLY:
            body = message.get("body")
        else:
            return None
        error = message.get("error")
        return cls(
            channel=str(message.get("channel")),
            process=str(message.get("process")),
            error=None if error is None else str(error),
            body=body if isinstance(body, dict) else {},
        )


def subscriber_id(layer: Any) -> str:
    """One pub/sub subscriber: one layer instance in one event loop of one process."""
    return f"{PROCESS}:{id(layer)}:{id(asyncio.get_running_loop())}"


async def answer(
    layer: Any,
    request: dict[str, Any],
    channel: str | None,
    *,
    body: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Answer ``request`` (if it asked for answers) on behalf of the process listening on ``channel``."""
    reply_to = request.get("reply_to")
    if not reply_to:
        return
    await layer.send(
        reply_to,
        {
            "type": REPLY,
            "request_id": request.get("request_id"),
            "channel": channel,
            "process": subscriber_id(layer),
            "error": error,
            "body": body or {},
        },
    )
    metrics.layer_sent(REPLY)


class ReplyInbox:
    """Answers that arrive on a long-lived channel (a lifetime manager's), handed to the request awaiting them."""

    def __init__(self) -> None:
        #: The channel answers are sent to; None while it has none (the manager is stopped).
        self.channel: str | None = None
        self._pending: dict[str, asyncio.Queue[Reply]] = {}

    def open(self, request_id: str) -> asyncio.Queue[Reply]:
        """Start collecting the answers to ``request_id``."""
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._pending[request_id] = queue
        return queue

    def close(self, request_id: str) -> None:
        """Stop collecting (answers arriving later are dropped)."""
        self._pending.pop(request_id, None)

    def deliver(self, message: dict[str, Any]) -> None:
        """Route one :data:`REPLY` message received on the channel."""
        queue = self._pending.get(str(message.get("request_id") or ""))
        reply = Reply.from_message(message)
        if queue is not None and reply is not None:
            queue.put_nowait(reply)


@contextlib.asynccontextmanager
async def _exchange(
    layer: Any, inbox: ReplyInbox | None
) -> AsyncIterator[tuple[dict[str, Any], Callable[[], Awaitable[Reply]]]]:
    """Yield the reply fields to add to a request, and a coroutine function that returns the next answer."""
    request_id = secrets.token_urlsafe(12)
    if inbox is not None and inbox.channel is not None:
        queue = inbox.open(request_id)
        try:
            yield {"reply_to": inbox.channel, "request_id": request_id}, queue.get
        finally:
            inbox.close(request_id)
        return
    reply_to = await layer.new_channel()

    async def next_reply() -> Reply:
        while True:
            reply = Reply.from_message(await layer.receive(reply_to))
            if reply is not None:
                return reply

    try:
        yield {"reply_to": reply_to, "request_id": request_id}, next_reply
    finally:
        await release_channel(layer, reply_to)


async def _send_request(
    layer: Any, group: str, channel: str | None, request: dict[str, Any], request_id_out: dict[str, str] | None
) -> None:
    """Send a request to ``channel`` if given, else to ``group``; note its id in ``request_id_out``."""
    if request_id_out is not None:
        request_id_out["request_id"] = request["request_id"]
    if channel is not None:
        await layer.send(channel, request)
    else:
        await layer.group_send(group, request)
    metrics.layer_sent(str(request.get("type")))


async def ask_owner(
    layer: Any,
    group: str,
    message: dict[str, Any],
    timeout: float,
    inbox: ReplyInbox | None = None,
    *,
    channel: str | None = None,
    request_id_out: dict[str, str] | None = None,
) -> Reply | None:
    """Send a command to a layer group; the first answer (the owner's), or None if none came within ``timeout``.

    With ``channel`` the command goes to that one channel (the owner's, when known) instead.
    ``request_id_out``, if given, receives the request's id (under ``"request_id"``) before it is
    sent, for a later message that refers to this request.
    """
    async with _exchange(layer, inbox) as (fields, next_reply):
        await _send_request(layer, group, channel, {**message, **fields}, request_id_out)
        try:
            return await asyncio.wait_for(next_reply(), timeout)
        except TimeoutError:
            return None


class AcknowledgedButUnansweredError(Exception):
    """The owner acknowledged a command (:func:`ask_owner_with_ack`) but sent no final answer in time."""


async def ask_owner_with_ack(
    layer: Any,
    group: str,
    message: dict[str, Any],
    ack_timeout: float,
    timeout: float,
    inbox: ReplyInbox | None = None,
    *,
    channel: str | None = None,
    request_id_out: dict[str, str] | None = None,
) -> Reply | None:
    """Like :func:`ask_owner`, for a command the owner may take long to complete (a long poll).

    The owner acknowledges at once (an answer whose body has ``"accepted": True``) and answers
    again when done: nobody acknowledging within ``ack_timeout`` means nobody owns it (None at
    once, not after ``timeout``); an acknowledged command whose final answer does not come within
    ``timeout`` raises :class:`AcknowledgedButUnansweredError`. With ``channel`` the request goes
    to that one channel (the owner's, when known) instead of the whole group.
    """
    async with _exchange(layer, inbox) as (fields, next_reply):
        await _send_request(layer, group, channel, {**message, **fields}, request_id_out)
        try:
            reply = await asyncio.wait_for(next_reply(), ack_timeout)
        except TimeoutError:
            return None
        if reply.body.get("accepted") is not True:
            return reply
        try:
            return await asyncio.wait_for(next_reply(), timeout)
        except TimeoutError as exc:
            raise AcknowledgedButUnansweredError(f"no answer within {timeout:g} s after the acknowledgement") from exc


class SharedInboxes:
    """One long-lived reply channel per layer and event loop, for a process whose manager is not running.

    A fresh reply channel per request costs a subscription round trip, and channels-redis' pub/sub
    reader polls every 0.1 s while it has no subscription: a relayed request from a process with
    no connection of the hub would wait ~100 ms for its answer. Use it only in a long-lived event
    loop (a server's): its reader task lives as long as the loop.
    """

    def __init__(self) -> None:
        self._inboxes: dict[tuple[int, int], tuple[ReplyInbox, asyncio.Task[None]]] = {}

    async def get(self, layer: Any) -> ReplyInbox:
        """The inbox for ``layer`` in the running loop (made on first use)."""
        key = (id(asyncio.get_running_loop()), id(layer))
        entry = self._inboxes.get(key)
        if entry is not None and not entry[1].done():
            return entry[0]
        channel = await layer.new_channel()
        entry = self._inboxes.get(key)
        if entry is not None and not entry[1].done():  # another request made one meanwhile
            await release_channel(layer, channel)
            return entry[0]
        inbox = ReplyInbox()
        inbox.channel = channel

        async def read() -> None:
            try:
                while True:
                    inbox.deliver(await layer.receive(channel))
            finally:
                inbox.channel = None  # the layer failed (or the loop ends): the next request makes a new one

        self._inboxes[key] = (inbox, asyncio.ensure_future(read()))
        return inbox


@dataclass(frozen=True)
class Quorum:
    """Who must answer a message to a layer group: these channels, or this many processes."""

    channels: frozenset[str] | None = None
    processes: int | None = None

    @property
    def empty(self) -> bool:
        """Nobody is in the group."""
        return not self.channels and not self.processes

    def satisfied(self, channels: set[str], processes: set[str]) -> bool:
        """Whether the answers received so far cover the quorum."""
        if self.channels is not None:
            return self.channels <= channels
        return len(processes) >= (self.processes or 0)


async def layer_group_quorum(layer: Any, group: str) -> Quorum | None:
    """Who is in a layer group, as far as the layer can tell; None if it cannot.

    The in-memory layer and channels-redis' ``RedisChannelLayer`` know the member channels (its
    group's sorted set); ``RedisPubSubChannelLayer`` only knows how many processes subscribed
    (``PUBSUB NUMSUB``), so answers are then counted per process. A Redis that cannot be reached
    gives None (unknown); a channels-redis without the internals we read raises
    :class:`~.redis_internals.ChannelsRedisIncompatibleError`.
    """
    members = in_memory_members(layer, group)
    if members is not None:
        return Quorum(channels=members)
    try:
        if is_redis_core(layer):
            return Quorum(channels=await live_channels(layer, group, await core_group_members(layer, group)))
        if is_redis_pubsub(layer):
            return Quorum(processes=await pubsub_subscriber_count(layer, group))
    except ChannelsRedisIncompatibleError:
        raise
    except Exception as exc:  # Redis unreachable: the caller waits out its timeout
        logger.warning("signalr_groups: could not read who is in layer group %s: %r", group, exc)
    return None


async def gather(
    layer: Any, group: str, message: dict[str, Any], timeout: float, *, wait_if_unknown: bool = True
) -> tuple[dict[str, Reply], bool | None]:
    """Send ``message`` to a layer group and collect one answer per member.

    Returns the answers by answering channel, and whether every member answered (its quorum,
    see :func:`layer_group_quorum`) without an error before ``timeout``; ``None`` for a layer
    that cannot tell who listens, for which we either wait out the timeout
    (``wait_if_unknown``) or just send.
    """
    try:
        quorum = await layer_group_quorum(layer, group)
    except ChannelsRedisIncompatibleError:
        # Loud (an ERROR, and system check E003), but the message still goes out: a revocation
        # must reach the other processes even when we cannot tell how many will answer.
        logger.exception("signalr_groups: cannot count the members of layer group %s; sending without a quorum", group)
        quorum = None
    if quorum is not None and quorum.empty:
        return {}, True
    if quorum is None and not wait_if_unknown:
        await layer.group_send(group, message)
        return {}, None
    replies: dict[str, Reply] = {}
    processes: set[str] = set()
    async with _exchange(layer, None) as (fields, next_reply):
        await layer.group_send(group, {**message, **fields})
        try:
            async with asyncio.timeout(timeout):
                while quorum is None or not quorum.satisfied(set(replies), processes):
                    reply = await next_reply()
                    replies[reply.channel] = reply
                    processes.add(reply.process)
        except TimeoutError:
            return replies, None if quorum is None else False
    return replies, not any(reply.error for reply in replies.values())
