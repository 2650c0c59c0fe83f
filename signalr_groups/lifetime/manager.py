"""The lifetime manager: this process's connections of one hub, and the fan-out path.

There is one :class:`HubLifetimeManager` per hub per event loop (in a server process: one per
hub). It orchestrates four parts, each in its own module:

- a :class:`~.registry.ConnectionRegistry` (connection id -> connection, group -> ids, user -> ids),
- a :class:`~signalr_groups.backplane.membership.LayerMembership`: one channel-layer channel
  that joins a layer group for the hub as a whole, and one for each hub group and user that has
  at least one local connection, so a send from anywhere costs one layer message per receiving
  *process*, never one per member,
- a :class:`~signalr_groups.backplane.rpc.ReplyInbox` for answers to its requests,
- the :class:`~.extensions.ManagerExtension` instances features registered.

Delivery to local members is an in-process loop that hands one pre-serialized record to each
connection, in time slices (:mod:`.fanout`). Keep-alive and timeouts are a heartbeat that looks at the connections that are due (:mod:`.schedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from signalr_groups import metrics
from signalr_groups.addressing import Address
from signalr_groups.backplane.layer import may_have_other_members
from signalr_groups.backplane.membership import LayerMembership
from signalr_groups.backplane.messages import ABORT, GROUP_ACTION, REPLY, SEND, RecentIds
from signalr_groups.backplane.rpc import LEGACY_ACK, ReplyInbox, answer
from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import (
    HubError,
    LimitExceededError,
)
from signalr_groups.lifetime import gc_policy
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension, registered_extensions
from signalr_groups.lifetime.fairness import YieldBudget
from signalr_groups.lifetime.fanout import FanOut
from signalr_groups.lifetime.registry import ConnectionRegistry, LocalConnection
from signalr_groups.lifetime.schedule import KeepAliveSchedule
from signalr_groups.protocol.serialized import SerializedInvocation

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=ManagerExtension)

#: Layer groups a disconnecting connection leaves before it gives the event loop back.
_LEAVES_PER_YIELD = 50


class HubLifetimeManager:
    """Local registry and fan-out for one hub in one event loop; see the module docstring."""

    def __init__(self, hub_key: str, layer: Any) -> None:
        self.hub_key = hub_key
        self.layer = layer
        self.registry = ConnectionRegistry()
        self.membership = LayerMembership(layer, hub_key, self.registry.interested) if layer is not None else None
        self.replies = ReplyInbox()
        self.fairness = YieldBudget()
        self.fanout = FanOut(self.registry, self._delivered)
        self.schedule = KeepAliveSchedule(self.registry, lambda: get_hub_settings().heartbeat_interval)
        self.extensions: tuple[ManagerExtension, ...] = tuple(factory(self) for factory in registered_extensions())
        handlers: dict[str, LayerHandler] = {
            SEND: self._on_send,
            GROUP_ACTION: self._on_group_action,
            ABORT: self._on_abort,
        }
        for extension in self.extensions:
            handlers.update(extension.layer_handlers())
        self._handlers: Mapping[str, LayerHandler] = handlers
        self._lifecycle = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._running = False
        self._holds = 0
        self._recent_sends = RecentIds()

    # ------------------------------------------------------------------ read-only views

    @property
    def connections(self) -> Mapping[str, LocalConnection]:
        """This process's connections of the hub, by id."""
        return self.registry.connections

    @property
    def groups(self) -> Mapping[str, set[str]]:
        """Group -> ids of its local members."""
        return self.registry.groups

    @property
    def users(self) -> Mapping[str, set[str]]:
        """User identifier -> ids of the user's local connections."""
        return self.registry.users

    @property
    def channel_name(self) -> str | None:
        """This manager's channel on the layer (None without a layer, or while stopped)."""
        return self.membership.channel if self.membership is not None else None

    @property
    def running(self) -> bool:
        """True while the manager has a layer channel and its background tasks run."""
        return self._running

    def should_yield(self) -> bool:
        """Whether a sender or an invocation loop should give the event loop back now (see :mod:`.fairness`)."""
        return self.fairness.should_yield()

    def extension(self, kind: type[E]) -> E | None:
        """This manager's instance of a registered extension class, if any."""
        for extension in self.extensions:
            if isinstance(extension, kind):
                return extension
        return None

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ start and stop

    async def _start(self) -> None:
        membership = self.membership
        if membership is not None:
            self.replies.channel = await membership.start()
            self._tasks.append(asyncio.ensure_future(self._receive_loop(membership)))
            self._tasks.append(asyncio.ensure_future(membership.run_liveness()))
        self._tasks.append(asyncio.ensure_future(self._sweep_loop()))
        self._running = True

    async def _stop(self) -> None:
        self._running = False
        self.fanout.stop()
        self.schedule.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.replies.channel = None
        if self.membership is not None:
            await self.membership.stop()

    # ------------------------------------------------------------------ connections

    async def connect(self, connection: LocalConnection) -> None:
        """Register a connection after its handshake: it joins the hub and its user's group.

        Raises :class:`LimitExceededError` when the user already holds ``MAX_CONNECTIONS_PER_USER``
        connections here, and whatever the channel layer raised if it cannot be reached (the
        connection is then not registered), so the caller can close it with a clear error rather
        than leave it deaf to other processes.
        """
        user = connection.user_identifier
        limit = get_hub_settings().max_connections_per_user
        async with self._lifecycle:
            if not self._running:
                await self._start()  # (a user's first connection here is never over the limit)
            if user is not None and self.registry.user_connection_count(user) >= limit:
                raise LimitExceededError(f"Too many connections: a user may hold {limit} to this hub on a server.")
            address = connection.client_address
            per_address = get_hub_settings().max_anonymous_connections_per_address
            if (
                per_address is not None
                and user is None
                and connection.credentials.account_id is None
                and address is not None
                and self.registry.anonymous_connection_count(address) >= per_address
            ):
                raise LimitExceededError(
                    f"Too many anonymous connections from your address: at most {per_address} to this hub on a server."
                )
            self.registry.add(connection)
            self.schedule.add(connection, time.monotonic())
            gc_policy.connection_opened()
        account = connection.credentials.account_id
        try:
            if user is not None:
                await self._sync("user", user)
            if account is not None:
                await self._sync("account", account)
        except BaseException:
            await self.disconnect(connection)
            raise

    async def run_registered_hooks(self, connection: LocalConnection) -> None:
        """Run every extension's ``on_registered`` for a new connection (before its handshake is answered)."""
        for extension in self.extensions:
            try:
                await extension.on_registered(connection)
            except Exception:
                logger.exception(
                    "signalr_groups: %s failed for connection %s", type(extension).__name__, connection.connection_id
                )

    async def disconnect(self, connection: LocalConnection) -> None:
        """Remove a connection from the hub, its groups and its user; stop when the last one leaves.

        The local registry is updated first and at once; channel-layer clean-up follows and its
        failures are logged, never raised.
        """
        removed = self.registry.remove(connection)
        if removed is None:
            return
        self.schedule.remove(connection.connection_id)
        groups, emptied = removed
        for group in groups:
            for extension in self.extensions:
                extension.on_left(connection.connection_id, group)
        for extension in self.extensions:
            extension.on_unregistered(connection)
        for index, (kind, name) in enumerate(emptied, 1):
            await self._sync_quietly(kind, name)
            if index % _LEAVES_PER_YIELD == 0:
                await asyncio.sleep(0)  # thousands of groups to leave must not stall other sockets
        await self._stop_if_idle()

    async def hold(self) -> None:
        """Start the manager if needed and keep it running until :meth:`release`.

        For a connection that needs the layer before it is registered: an HTTP-transport
        connection, whose handshake may arrive through another process.
        """
        async with self._lifecycle:
            if not self._running:
                await self._start()
            self._holds += 1

    async def release(self) -> None:
        """Undo one :meth:`hold`; stop the manager if nothing else needs it."""
        self._holds = max(0, self._holds - 1)
        await self._stop_if_idle()

    def _idle(self) -> bool:
        return not self.registry and not self._holds

    async def _stop_if_idle(self) -> None:
        if self._idle():
            async with self._lifecycle:
                if self._idle() and self._running:  # (checked again: a connection may have come meanwhile)
                    await self._stop()

    # ------------------------------------------------------------------ groups

    async def add_local(self, connection_id: str, group: str) -> bool:
        """Add a local connection to a group (idempotent); False if it is not on this process.

        Every extension's ``before_join`` runs first and may refuse with a ``HubError``.
        """
        registry = self.registry
        connection = registry.connections.get(connection_id)
        if connection is None:
            return False
        if registry.is_member(connection_id, group):
            # Already a member, or a concurrent join is in flight: wait for its layer join.
            await self._sync("group", group)
            return registry.is_member(connection_id, group)
        limit = get_hub_settings().max_groups_per_connection
        if registry.group_count(connection_id) >= limit:
            raise LimitExceededError(f"Too many groups: a connection may be in {limit} at once.")
        for extension in self.extensions:
            await extension.before_join(connection, group)
        if registry.connections.get(connection_id) is not connection:
            return False  # disconnected while an extension awaited
        if registry.group_count(connection_id) >= limit and not registry.is_member(connection_id, group):
            raise LimitExceededError(f"Too many groups: a connection may be in {limit} at once.")  # joined meanwhile
        if not registry.join(connection_id, group):
            return True  # joined meanwhile
        for extension in self.extensions:
            extension.on_joined(connection_id, group)
        try:
            await self._sync("group", group)
        except BaseException:
            # Without the layer membership other processes' sends would miss this member: undo.
            await self.remove_local(connection_id, group)
            raise
        return True

    async def remove_local(self, connection_id: str, group: str) -> bool:
        """Remove a local connection from a group (idempotent); False if it is not on this process."""
        if connection_id not in self.registry:
            return False
        if self.remove_now(connection_id, group):
            await self._sync_quietly("group", group)
        return True

    def remove_now(self, connection_id: str, group: str) -> bool:
        """Take a connection out of a group in the registry, synchronously; True if the group emptied.

        The caller then leaves the group's layer group (:meth:`leave_layer_group_later` when it
        cannot await).
        """
        member = self.registry.is_member(connection_id, group)
        emptied = self.registry.leave(connection_id, group)
        if member:
            for extension in self.extensions:
                extension.on_left(connection_id, group)
        return emptied

    def leave_layer_group_later(self, group: str) -> None:
        """Leave an emptied group's layer group in the background (for synchronous callers)."""
        self.spawn(self._sync_quietly("group", group))

    async def sync_group(self, group: str) -> None:
        """Make the layer membership of ``group`` follow the registry, logging (not raising) failures."""
        await self._sync_quietly("group", group)

    async def _sync(self, kind: str, name: str) -> None:
        if self.membership is not None:
            await self.membership.sync(kind, name)

    async def _sync_quietly(self, kind: str, name: str) -> None:
        if self.membership is not None:
            await self.membership.sync_quietly(kind, name)

    # ------------------------------------------------------------------ delivery and commands

    def deliver_local(self, address: Address, record: SerializedInvocation) -> asyncio.Future[None] | None:
        """Deliver ``record`` to every local recipient, in slices (see :mod:`.fanout`).

        Returns None once all have it, or a future that completes when the last slice is delivered.
        """
        return self.fanout.deliver(address, record)

    def _delivered(self, count: int) -> None:
        metrics.delivered(self.hub_key, count)

    def close_account_local(
        self, account: str, session_key: str | None, error: str | None, allow_reconnect: bool | None
    ) -> int:
        """Close this process's connections of a Django user (of one session only, if given)."""
        connections = self.registry.account_connections(account, session_key)
        for connection in connections:
            connection.abort(error, allow_reconnect)
        return len(connections)

    def needs_layer(self, address: Address) -> bool:
        """Whether a send from this process must also cross the channel layer."""
        if self.layer is None:
            return False
        if address.kind == "connections" and all(name in self.registry for name in address.names):
            return False
        return may_have_other_members(self.layer, address.layer_group(self.hub_key), self.channel_name)

    # ------------------------------------------------------------------ the layer

    async def handle_layer_message(self, message: dict[str, Any]) -> None:
        """Apply one message from the layer, and answer it if it asked (see :mod:`signalr_groups.backplane.rpc`)."""
        kind = message.get("type")
        metrics.layer_received(self.hub_key, str(kind))
        if kind in (REPLY, LEGACY_ACK):
            self.replies.deliver(message)
            return
        handler = self._handlers.get(str(kind))
        if handler is None:
            return
        try:
            body = await handler(message)
        except HubError as exc:
            await answer(self.layer, message, self.channel_name, error=str(exc))
            return
        if body is not None:
            await answer(self.layer, message, self.channel_name, body=body)

    async def _on_send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("origin") == self.channel_name:
            return None
        send_id = message.get("id")
        if send_id is not None and not self._recent_sends.first_time(str(send_id)):
            return None  # a layer's redelivery (see RecentIds): at most once
        msgpack = message.get("msgpack")
        record = SerializedInvocation(message["payload"], msgpack if isinstance(msgpack, bytes) else None)
        pending = self.deliver_local(Address.from_wire(message["address"]), record)
        if pending is not None:
            await pending  # (the next layer message waits: the queue of sends stays bounded)
        return None

    async def _on_group_action(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection_id = message["connection_id"]
        if connection_id not in self.registry:
            return None  # another process owns it
        if message["action"] == "add":
            await self.add_local(connection_id, message["group"])
        else:
            await self.remove_local(connection_id, message["group"])
        return {}

    async def _on_abort(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.registry.connections.get(message["connection_id"])
        if connection is None:
            return None
        connection.abort(message.get("error"), message.get("allow_reconnect"))
        return {}

    async def _receive_loop(self, membership: LayerMembership) -> None:
        while True:
            try:
                message = await self.layer.receive(membership.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("signalr_groups: receiving from the channel layer failed")
                await membership.recover()
                continue
            try:
                await self.handle_layer_message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("signalr_groups: a channel-layer message could not be handled")

    # ------------------------------------------------------------------ the sweep

    async def _sweep_loop(self) -> None:
        """Once a second: keep-alive pings and timeouts of the connections due (:mod:`.schedule`), the extensions'
        sweeps; now and then a layer refresh."""
        settings = get_hub_settings()
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(settings.heartbeat_interval)
            now = time.monotonic()
            await self.schedule.run_due(now)
            gc_policy.maybe_freeze(settings.gc_freeze_connections)
            for extension in self.extensions:
                try:
                    extension.on_sweep()
                except Exception:
                    logger.exception("signalr_groups: %s failed in the sweep", type(extension).__name__)
            if self.membership is not None and now - last_refresh >= settings.layer_group_refresh_interval:
                # channels-redis expires memberships after group_expiry: refresh the live ones.
                last_refresh = now
                await self.membership.refresh()
