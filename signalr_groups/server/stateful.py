"""Stateful reconnect (ASP.NET Core 8): the sequence numbers, acknowledgements and replay buffer of one connection.

When a client negotiated ``useStatefulReconnect`` and shook hands with version 2, both sides
number the messages of types 1–5 they send (from 1), acknowledge what they received (``Ack``),
and keep what the other side has not acknowledged. When the WebSocket drops, the client opens a
new one with the same connection token, without a handshake; each side then sends ``Sequence``
(the id of the first message it is about to resend) and resends what was not acknowledged, and
each receiver drops the duplicates. The connection — its id, groups, user and items — survives.

:class:`StatefulSession` is that bookkeeping for one connection; the
:class:`~signalr_groups.server.outbox.Outbox` numbers and keeps what it writes, and the
:class:`~signalr_groups.server.dispatcher.HubDispatcher` filters what it reads through it.
:class:`HeldConnections` bounds the connections waiting for their client to come back.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final

from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import ProtocolError
from signalr_groups.lifetime.extensions import ManagerExtension
from signalr_groups.protocol.messages import (
    CancelInvocationMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from signalr_groups.server.gate import Gate

if TYPE_CHECKING:
    from signalr_groups.lifetime.registry import LocalConnection

#: The message types that are numbered and replayed (types 1–5).
TRACKED_MESSAGES: Final = (
    InvocationMessage,
    StreamItemMessage,
    CompletionMessage,
    StreamInvocationMessage,
    CancelInvocationMessage,
)


class StatefulSession:
    """Both directions' sequence state of one connection that may resume on a new socket.

    Sending: :meth:`track` numbers a written record and keeps it until the client acknowledges
    it (:meth:`ack`); past ``buffer_size`` bytes kept, :attr:`full` holds the writer (backpressure,
    as ASP.NET Core), so nothing a client has not acknowledged is ever dropped. Receiving:
    :meth:`should_process` drops what a resending client sent before, and :meth:`ack_due` says
    when to acknowledge.
    """

    __slots__ = (
        "_acked_sent",
        "_items",
        "_latest_received",
        "_next_receiving",
        "_room",
        "buffer_size",
        "buffered",
        "sent",
        "waiting_for_sequence",
    )

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        #: Records written and not yet acknowledged: ``(sequence id, record)``, oldest first.
        self._items: deque[tuple[int, Any]] = deque()
        #: Bytes (or characters) in :attr:`_items`.
        self.buffered = 0
        #: Tracked records written so far (the id of the last one).
        self.sent = 0
        self._room = Gate()
        self._next_receiving = 1
        self._latest_received = 0
        self._acked_sent = 0
        #: After a reconnect, messages are dropped until the client's Sequence arrives (as .NET and the JS client).
        self.waiting_for_sequence = False

    # ------------------------------------------------------------------ sending

    @property
    def full(self) -> bool:
        """Whether the unacknowledged records fill the buffer (the writer waits for an Ack)."""
        return self.buffered >= self.buffer_size

    async def room(self) -> None:
        """Wait for the next Ack (or :meth:`release`)."""
        await self._room.wait()

    def release(self) -> None:
        """Wake a writer waiting for room (the connection is closing)."""
        self._room.open()

    def track(self, record: Any) -> None:
        """Number and keep a record about to be written."""
        self.sent += 1
        self._items.append((self.sent, record))
        self.buffered += len(record)

    def ack(self, sequence_id: int) -> None:
        """Forget the records up to ``sequence_id``; a protocol error for an id never sent."""
        if sequence_id > self.sent:
            raise ProtocolError(f"Ack for message {sequence_id}, but only {self.sent} were sent.")
        items = self._items
        while items and items[0][0] <= sequence_id:
            _id, record = items.popleft()
            self.buffered -= len(record)
        self._room.open()

    def resend(self) -> tuple[int, list[Any]]:
        """After a reconnect: the Sequence id to announce, and the records to write again."""
        items = self._items
        first = items[0][0] if items else self.sent + 1
        return first, [record for _id, record in items]

    # ------------------------------------------------------------------ receiving

    def should_process(self, message: HubMessage) -> bool:
        """Whether to act on a received message: False for a duplicate, or anything before the awaited Sequence."""
        if self.waiting_for_sequence:
            if isinstance(message, SequenceMessage):
                self.waiting_for_sequence = False
                return True
            return False
        if not isinstance(message, TRACKED_MESSAGES):
            return True
        current = self._next_receiving
        self._next_receiving = current + 1
        if current <= self._latest_received:
            return False  # resent after a reconnect, and already processed
        self._latest_received = current
        return True

    def reset_sequence(self, sequence_id: int) -> None:
        """The client's Sequence: its next message has this id (a protocol error if it skips ahead)."""
        if sequence_id < 1:
            raise ProtocolError(f"Sequence ID must be at least 1, got {sequence_id}.")
        if sequence_id > self._next_receiving:
            raise ProtocolError("Sequence ID greater than amount of messages we've received.")
        self._next_receiving = sequence_id

    def ack_due(self) -> int | None:
        """The id to acknowledge now, if messages arrived since the last Ack (called about once a second)."""
        latest = self._latest_received
        if latest > self._acked_sent:
            self._acked_sent = latest
            return latest
        return None

    def ack_lost(self) -> None:
        """The Acks queued for the old socket may never have arrived: acknowledge again on the next tick."""
        self._acked_sent = 0


class HeldConnections(ManagerExtension):
    """Connections waiting for their client to reconnect: ended when the window passes or their owner holds too many.

    A held connection keeps its groups and buffers, so this is the bound an attacker meets
    (stateful reconnect's denial of service, SignalR CVE-2026-56170): each one lives at most
    ``DISCONNECT_TIMEOUT`` seconds without a socket, and a user (or, anonymous, an address) holds
    at most ``MAX_HELD_CONNECTIONS_PER_USER``; beyond that the longest-held one ends at once.
    """

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        #: Owner key -> held connections (oldest first) and the monotonic time each was detached.
        self._held: dict[str, OrderedDict[str, tuple[Any, float]]] = {}

    @staticmethod
    def _owner(connection: Any) -> str:
        if connection.user_identifier is not None:
            return f"user:{connection.user_identifier}"
        return f"address:{connection.client_address}"

    def __len__(self) -> int:
        return sum(len(held) for held in self._held.values())

    def hold(self, connection: Any, *, evict: bool = True) -> None:
        """A connection lost its socket and waits for its client; end the owner's oldest beyond the cap.

        ``evict=False``: its client is already back on a new socket that takes it over at once (the
        old socket still looked alive), so it is not one more connection waiting and ends no other.
        """
        owner = self._owner(connection)
        held = self._held.setdefault(owner, OrderedDict())
        held[connection.connection_id] = (connection, time.monotonic())
        limit = get_hub_settings().max_held_connections_per_user
        while evict and len(held) > limit:
            _id, (oldest, _since) = held.popitem(last=False)
            oldest.expire(f"its user holds more than {limit} connections waiting to reconnect")
        if not held:
            self._held.pop(owner, None)

    def resume(self, connection: Any) -> None:
        """A held connection got its socket back (or ended)."""
        owner = self._owner(connection)
        held = self._held.get(owner)
        if held is not None:
            held.pop(connection.connection_id, None)
            if not held:
                del self._held[owner]

    def on_unregistered(self, connection: LocalConnection) -> None:
        """Forget a connection that ended."""
        self.resume(connection)

    def on_sweep(self) -> None:
        """End the connections whose client did not come back within ``DISCONNECT_TIMEOUT``."""
        if not self._held:
            return
        deadline = time.monotonic() - get_hub_settings().disconnect_timeout
        for owner, held in list(self._held.items()):
            for connection_id, (connection, since) in list(held.items()):
                if since <= deadline:
                    del held[connection_id]
                    connection.expire("the client did not reconnect in time")
            if not held:
                self._held.pop(owner, None)
