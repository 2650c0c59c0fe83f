"""The states of a connection."""

from __future__ import annotations

import enum


class ConnectionState(enum.Enum):
    """Where a connection is in its life; it only ever moves forward.

    ``HANDSHAKING``: the socket is accepted, the handshake not yet answered. ``OPEN``: the
    handshake is answered and messages flow. ``CLOSING``: a close has begun (ours, the client's,
    or a broken transport): nothing new is queued, the Close message and what preceded it are
    still written. ``CLOSED``: torn down.
    """

    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    @property
    def accepting(self) -> bool:
        """Whether records may still be queued and invocations run."""
        return self is ConnectionState.HANDSHAKING or self is ConnectionState.OPEN
