"""Hubs used by the tests: every clients.* target, groups, errors, sync methods."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import threading
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import async_to_sync

from signalr_groups import ClientResultError, Hub, HubError, hub_method
from signalr_groups.permissions import HasPermission, IsAuthenticated, IsStaff

#: The connection ids of the server streams whose ``finally`` ran (in this server process).
FINISHED_STREAMS: list[str] = []


class InteropHub(Hub):
    """Exposes each SignalR send target; clients receive ``Receive(kind, message)``."""

    hub_name = "interop"
    restricted_groups = ("vip-*", "secret")

    async def on_connected(self) -> None:
        self.context.items["calls"] = 0

    async def on_disconnected(self, exception: BaseException | None) -> None:
        """Tell the "lifecycle-watchers" group: ``Lifecycle("disconnected", connection_id, reason)``."""
        reason = str(exception) if exception is not None else None
        await self.clients.group("lifecycle-watchers").send(
            "Lifecycle", "disconnected", self.context.connection_id, reason
        )

    @hub_method
    async def echo(self, value: Any) -> Any:
        return value

    @hub_method
    async def slow(self, payload: str) -> int:
        """A slow method: a client that calls it faster than it runs must be held back, not buffered."""
        await asyncio.sleep(0.05)
        return len(payload)

    @hub_method
    async def send_sequence(self, group_name: str, count: int) -> int:
        """Send ``Seq(0..count-1)`` to a group from one invocation: a long fan-out (chaos row 41)."""
        for index in range(count):
            await self.clients.group(group_name).send("Seq", index)
        return count

    @hub_method
    async def get_connection_id(self) -> str:
        return self.context.connection_id

    @hub_method
    async def get_user_identifier(self) -> str | None:
        return self.context.user_identifier

    @hub_method
    async def count_calls(self) -> int:
        self.context.items["calls"] += 1
        return int(self.context.items["calls"])

    @hub_method
    async def add(self, a: int, b: int) -> int:
        return a + b

    @hub_method
    async def nothing(self) -> None:
        return None

    @hub_method(name="Renamed")
    async def method_with_explicit_name(self) -> str:
        return "renamed"

    async def not_exposed(self) -> str:
        return "must not be callable"

    @hub_method
    def sync_echo(self, value: Any) -> dict[str, Any]:
        return {"value": value, "main_thread": threading.current_thread() is threading.main_thread()}

    @hub_method
    def sync_send_to_caller(self, message: str) -> str:
        async_to_sync(self.clients.caller.send)("Receive", "sync-caller", message)
        return "sent"

    @hub_method
    async def fail(self, message: str) -> None:
        raise HubError(message)

    @hub_method
    async def crash(self) -> None:
        raise RuntimeError("secret internal detail")

    @hub_method
    async def unserializable(self) -> object:
        return object()

    @hub_method
    async def raise_cancelled(self) -> None:
        raise asyncio.CancelledError

    @hub_method
    async def abort_me(self) -> None:
        self.context.abort()

    @hub_method
    async def send_to_all(self, message: str) -> None:
        await self.clients.all.send("Receive", "all", message)

    @hub_method
    async def send_to_caller(self, message: str) -> None:
        await self.clients.caller.send("Receive", "caller", message)

    @hub_method
    async def send_to_others(self, message: str) -> None:
        await self.clients.others.send("Receive", "others", message)

    @hub_method
    async def send_to_client(self, connection_id: str, message: str) -> None:
        await self.clients.client(connection_id).send("Receive", "client", message)

    @hub_method
    async def send_to_clients(self, connection_ids: list[str], message: str) -> None:
        await self.clients.clients(connection_ids).send("Receive", "clients", message)

    @hub_method
    async def send_to_all_except(self, connection_ids: list[str], message: str) -> None:
        await self.clients.all_except(connection_ids).send("Receive", "all_except", message)

    @hub_method
    async def join_group(self, group_name: str) -> bool:
        return await self.groups.add_to_group(self.context.connection_id, group_name)

    @hub_method
    async def leave_group(self, group_name: str) -> bool:
        return await self.groups.remove_from_group(self.context.connection_id, group_name)

    @hub_method
    async def send_to_group(self, group_name: str, message: str) -> None:
        await self.clients.group(group_name).send("Receive", "group", message)

    @hub_method
    async def send_to_groups(self, group_names: list[str], message: str) -> None:
        await self.clients.groups(group_names).send("Receive", "groups", message)

    @hub_method
    async def send_to_group_except(self, group_name: str, connection_ids: list[str], message: str) -> None:
        await self.clients.group_except(group_name, connection_ids).send("Receive", "group_except", message)

    @hub_method
    async def send_to_others_in_group(self, group_name: str, message: str) -> None:
        await self.clients.others_in_group(group_name).send("Receive", "others_in_group", message)

    @hub_method
    async def send_to_user(self, user_id: str, message: str) -> None:
        await self.clients.user(user_id).send("Receive", "user", message)

    @hub_method
    async def send_to_users(self, user_ids: list[str], message: str) -> None:
        await self.clients.users(user_ids).send("Receive", "users", message)

    @hub_method
    async def blobs(self, count: int, size: int) -> AsyncIterator[str]:
        """A server stream of ``count`` large items, as fast as the connection takes them: ``"<n>:xxx…"``."""
        for number in range(count):
            yield f"{number}:" + "x" * size

    @hub_method
    async def counter(self, count: int, delay: float) -> AsyncIterator[int]:
        """A server stream: 0 .. count-1, ``delay`` seconds apart; its ``finally`` is recorded."""
        try:
            for number in range(count):
                yield number
                await asyncio.sleep(delay)
        finally:
            FINISHED_STREAMS.append(self.context.connection_id)

    @hub_method
    async def streams_finished(self) -> int:
        """How many of the caller's server streams have run their ``finally``."""
        return FINISHED_STREAMS.count(self.context.connection_id)

    @hub_method
    async def failing_stream(self, count: int, hub_error: bool) -> AsyncIterator[int]:
        """Yields ``count`` items, then raises (a HubError, whose text reaches the client, or a ValueError)."""
        for number in range(count):
            yield number
        if hub_error:
            raise HubError("the stream broke")
        raise ValueError("a detail the client must not see")

    @hub_method
    async def sum_stream(self, numbers: AsyncIterator[int]) -> int:
        """Sums a client upload stream."""
        total = 0
        async for number in numbers:
            total += number
        return total

    @hub_method
    async def join_streams(self, separator: str, first: AsyncIterator[str], second: AsyncIterator[str]) -> str:
        """Reads two upload streams, one after the other."""
        return separator.join([item async for item in first] + [item async for item in second])

    @hub_method
    async def ask_caller(self, target: str, timeout: float) -> dict[str, Any]:
        """A client result from the caller: its answer, or the exception it ended in."""
        try:
            return {"result": await self.clients.caller.invoke(target, "from the hub", timeout=timeout)}
        except ClientResultError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    @hub_method
    async def ask_client(self, connection_id: str, target: str, timeout: float) -> dict[str, Any]:
        """A client result from another connection (on any server process)."""
        try:
            return {"result": await self.clients.client(connection_id).invoke(target, timeout=timeout)}
        except ClientResultError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    @hub_method
    async def server_times(self) -> dict[str, Any]:
        """Datetimes made on the server: aware (in UTC+2) and naive (read as UTC), plus a date and a decimal."""
        aware = datetime.datetime(
            2026, 12, 1, 10, 30, 15, 250_000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        )
        return {
            "aware": aware,
            "naive": datetime.datetime(2026, 12, 1, 8, 30, 15, 250_000),
            "date": datetime.date(2026, 12, 1),
            "decimal": decimal.Decimal("1.10"),
        }


class OtherHub(Hub):
    """A second hub, to show that group names are scoped per hub."""

    hub_name = "other"

    @hub_method
    async def join_group(self, group_name: str) -> bool:
        return await self.groups.add_to_group(self.context.connection_id, group_name)

    @hub_method
    async def send_to_group(self, group_name: str, message: str) -> None:
        await self.clients.group(group_name).send("Receive", "group", message)


class ProtectedHub(Hub):
    """Needs an authenticated user to negotiate, connect or call anything; some methods need more."""

    hub_name = "protected"
    permission_classes = [IsAuthenticated]

    @hub_method
    async def whoami(self) -> str | None:
        return self.context.user_identifier

    @hub_method(permission_classes=[IsStaff])
    async def staff_only(self) -> str:
        return "staff"

    @hub_method(permission_classes=[HasPermission("auth.view_user") | IsStaff])
    async def view_users(self) -> str:
        return "users"

    @hub_method(permission_classes=[~IsStaff])
    async def not_for_staff(self) -> str:
        return "not staff"
