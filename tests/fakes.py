"""Stand-ins for connections, for tests of the lifetime manager without sockets."""

from __future__ import annotations

from typing import Any

from signalr_groups.auth.credentials import Credentials


class FakeHub:
    """A hub class as the manager's extensions see it: no restricted groups unless given."""

    restricted_groups: tuple[str, ...] = ()


class FakeConnection:
    """Stands in for a socket: records what the manager hands it (implements ``LocalConnection``)."""

    hub: type[Any] = FakeHub

    def __init__(
        self, connection_id: str, user: str | None = None, account: str | None = None, protocol: str = "json"
    ) -> None:
        self.connection_id = connection_id
        self.protocol = protocol
        self.user_identifier = user
        self.credentials = Credentials(account_id=account)
        self.client_address: str | None = "127.0.0.1"
        self.records: list[Any] = []  # JSON text, or MessagePack bytes
        self.aborted: list[tuple[str | None, bool | None]] = []
        self.ticks = 0
        self.hub_events: list[tuple[str, tuple[Any, ...]]] = []

    def deliver(self, record: Any) -> None:
        # A shared invocation in this connection's protocol (tests also hand plain strings).
        if isinstance(record, str):
            self.records.append(record)
        else:
            self.records.append(record.msgpack if self.protocol == "messagepack" else record.json)

    def tick(self, now: float) -> float | None:
        self.ticks += 1
        return None  # looked at again on the next heartbeat

    def abort(self, error: str | None = None, allow_reconnect: bool | None = None) -> None:
        self.aborted.append((error, allow_reconnect))

    def notify_hub(self, event: str, *args: Any) -> None:
        self.hub_events.append((event, args))

    async def invoke_client(self, target: str, arguments: list[Any], timeout: float) -> Any:
        return [target, *arguments]  # a client that answers with what it was asked
