"""What the hub dispatcher needs of its connection, and the stand-in once the connection is over."""

from __future__ import annotations

from typing import Final, Protocol

from signalr_groups.protocol.hub_protocols import Frame


class DispatchingConnection(Protocol):
    """What the dispatcher needs of its connection (one reference, rather than a callable per need)."""

    def write(self, frame: Frame) -> None:
        """Queue a record for this connection alone."""

    @property
    def accepting(self) -> bool:
        """Whether the connection still takes invocations (not closing)."""

    def should_yield(self) -> bool:
        """Whether a busy invocation loop should give the event loop back now."""

    def on_client_ping(self) -> None:
        """The client sent a Ping."""

    def on_client_close(self) -> None:
        """The client sent a Close message."""

    async def room(self) -> None:
        """Wait until the connection's outbox has room (a server stream's producer waits here)."""


class _Gone:
    """The connection of a dispatcher whose connection is over: writes are dropped, nothing is accepted."""

    accepting = False

    def write(self, frame: Frame) -> None:
        """Dropped."""

    def should_yield(self) -> bool:
        """Always: nothing is left to do."""
        return True

    def on_client_ping(self) -> None:
        """Ignored."""

    def on_client_close(self) -> None:
        """Ignored."""

    async def room(self) -> None:
        """Never waits."""


#: The stand-in connection of a dispatcher whose connection is over.
GONE: Final = _Gone()
