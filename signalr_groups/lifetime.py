"""The lifetime manager: this process's connections of one hub, and the fan-out path.

There is one :class:`HubLifetimeManager` per hub per event loop (in a server process: one per
hub). It keeps a local registry (connection id -> connection, group -> ids, user -> ids) and
one channel-layer channel. That channel joins a layer group for the hub as a whole, and one for
each hub group and user that has at least one local connection, so a send from anywhere costs
one layer message per receiving *process*, never one per member. Delivery to local members is
an in-process loop that appends one pre-serialized record to each connection's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

from channels.db import database_sync_to_async

from signalr_groups.addressing import Address
from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import HubError
from signalr_groups.grants import (
    GROUP_ACCESS_REVOKED,
    GrantList,
    GroupAccessDeniedError,
    access_until,
    fresh_active_grants,
)
from signalr_groups.layers import (
    ALIVE_INTERVAL,
    dead_channels,
    get_layer,
    is_redis_core,
    mark_alive,
    mark_gone,
    may_have_other_members,
)
from signalr_groups.naming import layer_group_name
from signalr_groups.protocol.json import write_invocation

logger = logging.getLogger(__name__)

#: Channel-layer message types (handled by the manager's receive loop).
SEND: Final = "signalr.send"
GROUP_ACTION: Final = "signalr.group_action"
ACK: Final = "signalr.ack"
ABORT: Final = "signalr.abort"
REVOKE_ACCOUNT: Final = "signalr.revoke_account"
GROUP_ACCESS: Final = "signalr.group_access"
GROUP_MEMBERS: Final = "signalr.group_members"
USER_GROUP_ACTION: Final = "signalr.user_group_action"
LIST_CONNECTIONS: Final = "signalr.list_connections"
#: Names this server process in acknowledgements (pub/sub layers count processes, not channels).
_PROCESS: Final = f"{os.getpid()}-{secrets.token_hex(4)}"
#: A restricted membership ends this many seconds before its grant's expiry (timer latency margin).
_EXPIRY_LEAD: Final = 0.01
#: Longest stretch of sends or invocations before the event loop is handed back (seconds).
_YIELD_BUDGET: Final = 0.005


class LocalConnection(Protocol):
    """What the manager needs from a connection of this process."""

    connection_id: str
    user_identifier: str | None

    def deliver(self, record: str) -> None:
        """Queue one serialized record for this connection, without waiting."""

    def heartbeat(self, now: float) -> None:
        """Send a keep-alive ping or time the connection out, as due at monotonic time ``now``."""

    def abort(self, error: str | None = None, allow_reconnect: bool | None = None) -> None:
        """Close the connection with a Close message."""


def _record_expiry(hub_key: str, group: str, account: str) -> None:
    from signalr_groups.receivers import record_revocations

    try:
        record_revocations(hub_key, group, {account}, "expired", "The grant expired.")
    except Exception:
        logger.exception("signalr_groups: could not record the expiry of %r for user %s", group, account)


class _LockEntry:
    """A per-layer-group lock and how many tasks use it (the entry is dropped when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class HubLifetimeManager:
    """Local registry and fan-out for one hub in one event loop; see the module docstring."""

    def __init__(self, hub_key: str, layer: Any) -> None:
        self.hub_key = hub_key
        self.layer = layer
        self.connections: dict[str, LocalConnection] = {}
        self.groups: dict[str, set[str]] = {}
        self.users: dict[str, set[str]] = {}
        #: Django user pk -> connection ids (for account-level revocation, whatever the user identifier).
        self.accounts: dict[str, set[str]] = {}
        #: (connection id, restricted group) -> Unix time its access ends (None: no expiry).
        self.access_until: dict[tuple[str, str], float | None] = {}
        self._expiry_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        #: Bumped per account whenever its group access is re-checked (see add_local).
        self._access_revision: dict[str | None, int] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._recorded_expiries: set[tuple[str, str]] = set()
        #: The Hub class (set by the consumer); it says which groups are restricted.
        self.hub_class: Any = None
        self.connection_groups: dict[str, set[str]] = {}
        #: connection id -> Unix time it registered.
        self.connected_at: dict[str, float] = {}
        self.channel_name: str | None = None
        self.all_group = layer_group_name(hub_key, "all", "")
        self._joined: set[str] = set()
        self._layer_locks: dict[str, _LockEntry] = {}
        self._lifecycle = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Channels of dead processes already removed from this manager's layer groups.
        self._pruned: set[str] = set()
        #: Layer groups whose leave failed (layer down): left again once the layer is back.
        self._failed_leaves: set[str] = set()
        self._recovery = asyncio.Lock()
        self._layer_generation = 0
        #: Bumped per user by each user-scoped group change (see user_groups.join_stored_groups).
        self.user_group_revision: dict[str, int] = {}
        #: Set by a connection whose outbox passed a quarter of its bound; senders then yield.
        self.pressure = False
        self._last_yield = time.monotonic()

    def should_yield(self) -> bool:
        """Whether a sender or an invocation loop should give the event loop back now.

        Yes when an outbox is filling up (its writer must run), or when work has gone on for
        ``_YIELD_BUDGET`` seconds without a forced yield (other sockets must not stall). Otherwise
        no: records then pile up per socket and go out batched in one frame, which is what makes
        bursts cheap.
        """
        now = time.monotonic()
        if self.pressure or now - self._last_yield >= _YIELD_BUDGET:
            self.pressure = False
            self._last_yield = now
            return True
        return False

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """True while the manager has a layer channel and its background tasks run."""
        return self._running

    async def _start(self) -> None:
        if self.layer is not None:
            channel = self.channel_name = await self.layer.new_channel()
            try:
                await mark_alive(channel)
                await self.layer.group_add(self.all_group, channel)
            except BaseException:
                self.channel_name = None  # the next connection starts afresh, leaving nothing behind
                from signalr_groups.sending import release_channel

                with contextlib.suppress(Exception):
                    await self.layer.group_discard(self.all_group, channel)
                with contextlib.suppress(Exception):
                    await release_channel(self.layer, channel)
                raise
            self._joined.add(self.all_group)
            self._tasks.append(asyncio.ensure_future(self._receive_loop()))
            self._tasks.append(asyncio.ensure_future(self._liveness_loop()))
        self._tasks.append(asyncio.ensure_future(self._heartbeat_loop()))
        self._running = True

    async def _stop(self) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.layer is not None and self.channel_name is not None:
            for group in [*self._joined, *self._failed_leaves]:
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel_name)
            with contextlib.suppress(Exception):
                await mark_gone(self.channel_name)
        self._joined.clear()
        self._failed_leaves.clear()
        self.channel_name = None

    async def connect(self, connection: LocalConnection) -> None:
        """Register a connection after its handshake: it joins the hub and its user's group.

        Raises if the channel layer cannot be reached (the connection is then not registered),
        so the caller can close it with ``allowReconnect`` rather than leave it deaf to other
        processes.
        """
        async with self._lifecycle:
            if not self._running:
                await self._start()
            self.connections[connection.connection_id] = connection
            self.connection_groups[connection.connection_id] = set()
            self.connected_at[connection.connection_id] = time.time()
            user = connection.user_identifier
            if user is not None:
                self.users.setdefault(user, set()).add(connection.connection_id)
            account = getattr(connection, "account_id", None)
            if account is not None:
                self.accounts.setdefault(account, set()).add(connection.connection_id)
        try:
            if user is not None:
                await self._sync_layer_group("user", user)
            if account is not None:
                await self._sync_layer_group("account", account)
        except BaseException:
            await self.disconnect(connection)
            raise

    async def disconnect(self, connection: LocalConnection) -> None:
        """Remove a connection from the hub, its groups and its user; stop when the last one leaves.

        The local registry is updated first and at once; channel-layer clean-up follows and its
        failures are logged, never raised.
        """
        connection_id = connection.connection_id
        if self.connections.get(connection_id) is not connection:
            return
        del self.connections[connection_id]
        self.connected_at.pop(connection_id, None)
        emptied: list[tuple[str, str]] = []
        for group in self.connection_groups.pop(connection_id, set()):
            self.access_until.pop((connection_id, group), None)
            timer = self._expiry_timers.pop((connection_id, group), None)
            if timer is not None:
                timer.cancel()
            members = self.groups.get(group)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del self.groups[group]
                    emptied.append(("group", group))
        for kind, index, key in (
            ("user", self.users, connection.user_identifier),
            ("account", self.accounts, getattr(connection, "account_id", None)),
        ):
            if key is None:
                continue
            members = index.get(key)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del index[key]
                    emptied.append((kind, key))
                    if kind == "account":
                        self._access_revision.pop(key, None)
                    else:
                        self.user_group_revision.pop(key, None)
        for kind, name in emptied:
            await self._sync_quietly(kind, name)
        if not self.connections:
            async with self._lifecycle:
                if not self.connections and self._running:
                    await self._stop()

    # ------------------------------------------------------------------ groups

    async def add_local(self, connection_id: str, group: str) -> bool:
        """Add a local connection to a group (idempotent); False if it is not on this process."""
        groups_of = self.connection_groups.get(connection_id)
        if groups_of is None:
            return False
        if group in groups_of:
            # Already a member, or a concurrent join is in flight: wait for its layer join.
            await self._sync_layer_group("group", group)
            return group in groups_of
        hub = self.hub_class
        if hub is not None and hub.is_restricted(group):
            connection = self.connections[connection_id]
            account = getattr(connection, "account_id", None)
            for _attempt in range(3):
                # A revocation applied while we read the grants would miss this not-yet-member:
                # read again until no access change for this account happened during the read.
                revision = self._access_revision.get(account, 0)
                grants = await database_sync_to_async(fresh_active_grants)(
                    getattr(connection, "user", None), self.hub_key
                )
                if self._access_revision.get(account, 0) == revision:
                    break
            else:
                raise GroupAccessDeniedError(f"Access to group '{group}' is changing; try again.")
            covered, until = access_until(grants, group)
            if until is not None and until - _EXPIRY_LEAD <= time.time():
                covered = False  # expiring this very instant (see _EXPIRY_LEAD)
            if not covered:
                raise GroupAccessDeniedError(f"Access to group '{group}' needs a grant, and you have none.")
            if connection_id not in self.connection_groups or group in self.connection_groups[connection_id]:
                return connection_id in self.connection_groups  # disconnected, or joined meanwhile
            self._set_access_until(connection_id, group, until)
        groups_of.add(group)
        self.groups.setdefault(group, set()).add(connection_id)
        try:
            await self._sync_layer_group("group", group)
        except BaseException:
            # Without the layer membership other processes' sends would miss this member: undo.
            await self.remove_local(connection_id, group)
            raise
        return True

    async def remove_local(self, connection_id: str, group: str) -> bool:
        """Remove a local connection from a group (idempotent); False if it is not on this process."""
        groups_of = self.connection_groups.get(connection_id)
        if groups_of is None:
            return False
        if self._remove_now(connection_id, group):
            await self._sync_quietly("group", group)
        return True

    def _set_access_until(self, connection_id: str, group: str, until: float | None) -> None:
        """Record when a restricted membership ends, and arm a timer for that instant."""
        key = (connection_id, group)
        self.access_until[key] = until
        handle = self._expiry_timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        if until is not None:
            # End a little ahead of the expiry, so that no message sent after it can still arrive.
            delay = max(0.0, until - time.time() - _EXPIRY_LEAD)
            self._expiry_timers[key] = asyncio.get_running_loop().call_later(delay, self._expire, key, until)

    def _expire(self, key: tuple[str, str], until: float) -> None:
        self._expiry_timers.pop(key, None)
        if self.access_until.get(key) != until:
            return  # re-granted or extended meanwhile
        connection_id, group = key
        connection = self.connections.get(connection_id)
        if self._remove_now(connection_id, group):
            task = asyncio.ensure_future(self._sync_quietly("group", group))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if connection is not None:
            connection.deliver(write_invocation(GROUP_ACCESS_REVOKED, (group, "expired")))
            self._tell_hub_access_ended(connection, group, "expired")
            logger.info("signalr_groups: access of %s to group %r expired", connection_id, group)
            account = getattr(connection, "account_id", None)
            if account is not None and (account, group) not in self._recorded_expiries:
                # One audit record per user and group (not per device) from this process.
                self._recorded_expiries.add((account, group))
                asyncio.get_running_loop().call_later(60, self._recorded_expiries.discard, (account, group))
                task = asyncio.ensure_future(database_sync_to_async(_record_expiry)(self.hub_key, group, account))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def _remove_now(self, connection_id: str, group: str) -> bool:
        """Take a connection out of a group in the registry, synchronously; True if the group emptied."""
        self.connection_groups.get(connection_id, set()).discard(group)
        self.access_until.pop((connection_id, group), None)
        handle = self._expiry_timers.pop((connection_id, group), None)
        if handle is not None:
            handle.cancel()
        members = self.groups.get(group)
        if members is not None:
            members.discard(connection_id)
            if not members:
                del self.groups[group]
                return True
        return False

    async def apply_group_access(self, account: str, grants: GrantList, cause: str) -> int:
        """Re-check a user's restricted memberships against their current grants; return how many ended.

        Memberships no longer covered end at once (before any other message is handled) and the
        connection gets ``GroupAccessRevoked(group, cause)``; the others get their new expiry.
        """
        self._access_revision[account] = self._access_revision.get(account, 0) + 1
        hub = self.hub_class
        if hub is None:
            return 0
        emptied: list[str] = []
        ended = 0
        for connection_id in list(self.accounts.get(account, ())):
            connection = self.connections.get(connection_id)
            if connection is None:
                continue
            for group in sorted(self.connection_groups.get(connection_id, ())):
                if not hub.is_restricted(group):
                    continue
                covered, until = access_until(grants, group)
                if covered:
                    self._set_access_until(connection_id, group, until)
                    continue
                if self._remove_now(connection_id, group):
                    emptied.append(group)
                connection.deliver(write_invocation(GROUP_ACCESS_REVOKED, (group, cause)))
                self._tell_hub_access_ended(connection, group, cause)
                ended += 1
        for group in emptied:
            await self._sync_quietly("group", group)
        return ended

    def _tell_hub_access_ended(self, connection: LocalConnection, group: str, reason: str) -> None:
        """Run the hub's ``on_group_access_revoked`` for the connection (in the background)."""
        hook = getattr(connection, "group_access_revoked", None)
        if hook is None:
            return
        task = asyncio.ensure_future(hook(group, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _expire_group_access(self) -> None:
        now = time.time()
        expired = [key for key, until in self.access_until.items() if until is not None and until <= now]
        emptied: list[str] = []
        for connection_id, group in expired:
            connection = self.connections.get(connection_id)
            if self._remove_now(connection_id, group):
                emptied.append(group)
            if connection is not None:
                connection.deliver(write_invocation(GROUP_ACCESS_REVOKED, (group, "expired")))
                self._tell_hub_access_ended(connection, group, "expired")
                logger.info("signalr_groups: access of %s to group %r expired", connection_id, group)
        for group in emptied:
            await self._sync_quietly("group", group)

    async def _sync_quietly(self, kind: str, name: str) -> None:
        try:
            await self._sync_layer_group(kind, name)
        except Exception:
            logger.exception("signalr_groups: leaving the channel-layer group of %s %r failed", kind, name)

    @contextlib.asynccontextmanager
    async def _layer_group_lock(self, layer_group: str) -> AsyncIterator[None]:
        """Serialize this process's joins and leaves of one layer group."""
        entry = self._layer_locks.get(layer_group)
        if entry is None:
            entry = self._layer_locks[layer_group] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._layer_locks.pop(layer_group, None)

    async def _sync_layer_group(self, kind: str, name: str) -> None:
        """Make this process's layer membership match the local registry (serialized per group)."""
        if self.layer is None:
            return
        # Account groups are shared by every hub: revoking an account reaches all of them at once.
        layer_group = layer_group_name("" if kind == "account" else self.hub_key, kind, name)
        async with self._layer_group_lock(layer_group):
            channel = self.channel_name
            if channel is None:
                return
            # Read the wish under the lock: the registry may have changed while we waited.
            wanted = name in {"group": self.groups, "user": self.users, "account": self.accounts}[kind]
            joined = layer_group in self._joined
            if wanted and not joined:
                await self.layer.group_add(layer_group, channel)
                if self.channel_name == channel:
                    self._joined.add(layer_group)
                    self._failed_leaves.discard(layer_group)
                else:  # the manager stopped meanwhile: do not leave a dead channel behind
                    await self.layer.group_discard(layer_group, channel)
            elif not wanted and joined:
                self._joined.discard(layer_group)
                try:
                    await self.layer.group_discard(layer_group, channel)
                except BaseException:
                    self._failed_leaves.add(layer_group)  # retried once the layer is back
                    raise

    # ------------------------------------------------------------------ delivery

    def deliver_local(self, address: Address, record: str) -> int:
        """Append ``record`` to the outbox of every local recipient; return how many got it."""
        exclude = address.exclude
        connections = self.connections
        ids: Any
        if address.kind == "all":
            ids = connections
        elif address.kind == "connections":
            ids = address.names
        else:
            index = self.groups if address.kind == "groups" else self.users
            if len(address.names) == 1:
                ids = index.get(address.names[0], ())
            else:
                ids = set().union(*(index.get(name, ()) for name in address.names))
        count = 0
        for connection_id in ids:
            if exclude and connection_id in exclude:
                continue
            connection = connections.get(connection_id)
            if connection is not None:
                connection.deliver(record)
                count += 1
        return count

    def revoke_account_local(
        self, account: str, session_key: str | None, error: str | None, allow_reconnect: bool | None
    ) -> int:
        """Close this process's connections of a Django user (of one session only, if given)."""
        closed = 0
        for connection_id in list(self.accounts.get(account, ())):
            connection = self.connections.get(connection_id)
            if connection is None:
                continue
            if session_key is not None and getattr(connection, "session_key", None) != session_key:
                continue
            connection.abort(error, allow_reconnect)
            closed += 1
        return closed

    async def apply_user_group(self, user: str, group: str, action: str) -> int:
        """Add (``action="add"``) or remove every local connection of a user to/from a group.

        A connection refused by a restricted group's grant check stays out (logged); returns
        how many connections were handled.
        """
        self.user_group_revision[user] = self.user_group_revision.get(user, 0) + 1
        handled = 0
        for connection_id in sorted(self.users.get(user, ())):
            try:
                if action == "add":
                    handled += await self.add_local(connection_id, group)
                else:
                    handled += await self.remove_local(connection_id, group)
            except GroupAccessDeniedError as exc:
                logger.info("signalr_groups: %s not added to %r: %s", connection_id, group, exc)
        return handled

    def local_connections(self, user: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """This manager's connections (of one user, or in one group) as plain dicts for listings."""
        ids: Any = self.connections
        if user is not None:
            ids = self.users.get(user, set())
        if group is not None:
            in_group = self.groups.get(group, set())
            ids = in_group if user is None else ids & in_group
        listing = []
        for connection_id in sorted(ids):
            connection = self.connections.get(connection_id)
            if connection is None:
                continue
            listing.append(
                {
                    "connection_id": connection_id,
                    "user": connection.user_identifier,
                    "groups": sorted(self.connection_groups.get(connection_id, ())),
                    "connected_at": self.connected_at.get(connection_id, 0.0),
                    "process": _PROCESS,
                }
            )
        return listing

    def local_members(self, group: str) -> tuple[int, list[str], int]:
        """This manager's members of a group: (connections, distinct user identifiers, anonymous)."""
        users: set[str] = set()
        anonymous = 0
        ids = self.groups.get(group, ())
        for connection_id in ids:
            connection = self.connections.get(connection_id)
            user = connection.user_identifier if connection is not None else None
            if user is None:
                anonymous += 1
            else:
                users.add(user)
        return len(ids), sorted(users), anonymous

    def needs_layer(self, address: Address) -> bool:
        """Whether a send from this process must also cross the channel layer."""
        if self.layer is None:
            return False
        if address.kind == "connections" and all(name in self.connections for name in address.names):
            return False
        return may_have_other_members(self.layer, address.layer_group(self.hub_key), self.channel_name)

    # ------------------------------------------------------------------ background tasks

    async def request(self, layer_group: str, message: dict[str, Any], timeout: float) -> bool:
        """Send a command to a layer group; True once some process acknowledges it on our channel.

        Raises :class:`HubError` with the owner's message if the owner refused the command.
        """
        request_id = secrets.token_urlsafe(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[request_id] = future
        try:
            await self.layer.group_send(
                layer_group, {**message, "reply_to": self.channel_name, "request_id": request_id}
            )
            ack = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._pending_acks.pop(request_id, None)
        if ack.get("error"):
            raise GroupAccessDeniedError(str(ack["error"]))
        return True

    def _subscriber(self) -> str:
        """One pub/sub subscriber: one layer instance in one event loop of one process."""
        return f"{_PROCESS}:{id(self.layer)}:{id(asyncio.get_running_loop())}"

    async def _answer(self, message: dict[str, Any], **fields: Any) -> None:
        """Reply to a broadcast query or command (see ``layers.gather_replies``): one answer per member channel.

        The answer names this channel and its pub/sub subscriber, so the asker can tell when every
        member (or, on pub/sub, every process) has answered.
        """
        reply_to = message.get("reply_to")
        if reply_to:
            await self.layer.send(
                reply_to, {"type": ACK, "channel": self.channel_name, "process": self._subscriber(), **fields}
            )

    async def _acknowledge(self, message: dict[str, Any], connection_id: str, error: str | None = None) -> None:
        reply_to = message.get("reply_to")
        if reply_to:
            await self.layer.send(
                reply_to,
                {"type": ACK, "connection_id": connection_id, "request_id": message.get("request_id"), "error": error},
            )

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("signalr_groups: receiving from the channel layer failed")
                await self._recover()
                continue
            try:
                await self.handle_layer_message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("signalr_groups: a channel-layer message could not be handled")

    async def _reassert_layer_groups(self) -> None:
        """Join again every layer group this process should be in (a restarted Redis has forgotten them).

        Also retries the leaves that failed during the outage. Each group under its lock, so a
        concurrent leave is never undone.
        """
        channel = self.channel_name
        if channel is None:
            return
        await mark_alive(channel)  # first: peers must not prune what we are about to re-add
        for group in list(self._joined):
            async with self._layer_group_lock(group):
                if group in self._joined and self.channel_name == channel:
                    await self.layer.group_add(group, channel)
        for group in list(self._failed_leaves):
            async with self._layer_group_lock(group):
                if group not in self._joined:
                    await self.layer.group_discard(group, channel)
                self._failed_leaves.discard(group)

    async def _recover(self) -> None:
        """After a layer failure: retry, with backoff, until the layer memberships are back.

        The receive loop and the liveness loop may both notice an outage: one recovers, the
        other waits for it.
        """
        generation = self._layer_generation
        async with self._recovery:
            if self._layer_generation != generation:
                return  # recovered while we waited
            delay = 0.1
            for attempt in itertools.count(1):
                await asyncio.sleep(delay)
                try:
                    await self._reassert_layer_groups()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempt == 1 or attempt % 10 == 0:
                        logger.warning("signalr_groups: the channel layer is still unreachable (%s); retrying", exc)
                    delay = min(delay * 2, 5.0)
                    continue
                self._layer_generation += 1
                logger.warning("signalr_groups: the channel layer is back; this process rejoined its layer groups")
                return

    async def handle_layer_message(self, message: dict[str, Any]) -> None:
        """Apply one message from the layer: a send, a group action, or an abort."""
        kind = message.get("type")
        if kind == SEND:
            if message.get("origin") == self.channel_name:
                return
            self.deliver_local(Address.from_wire(message["address"]), message["payload"])
        elif kind == GROUP_ACTION:
            connection_id = message["connection_id"]
            if connection_id not in self.connections:
                return
            try:
                if message["action"] == "add":
                    await self.add_local(connection_id, message["group"])
                else:
                    await self.remove_local(connection_id, message["group"])
            except HubError as exc:
                await self._acknowledge(message, connection_id, error=str(exc))
                return
            await self._acknowledge(message, connection_id)
        elif kind == ABORT:
            connection = self.connections.get(message["connection_id"])
            if connection is not None:
                connection.abort(message.get("error"), message.get("allow_reconnect"))
                await self._acknowledge(message, connection.connection_id)
        elif kind == GROUP_ACCESS:
            if message.get("hub") == self.hub_key:
                grants = [
                    (str(pattern), None if until is None else float(until)) for pattern, until in message["grants"]
                ]
                await self.apply_group_access(message["account"], grants, message.get("cause") or "changed")
            await self._answer(message, account=message["account"])
        elif kind == LIST_CONNECTIONS:
            if message.get("reply_to"):
                await self._answer(
                    message, connections=self.local_connections(message.get("user"), message.get("group"))
                )
        elif kind == USER_GROUP_ACTION:
            await self.apply_user_group(str(message["user"]), str(message["group"]), str(message["action"]))
            await self._answer(message)
        elif kind == GROUP_MEMBERS:
            if message.get("reply_to"):
                count, users, anonymous = self.local_members(str(message["group"]))
                await self._answer(message, connections=count, users=users, anonymous=anonymous)
        elif kind == REVOKE_ACCOUNT:
            self.revoke_account_local(
                message["account"], message.get("session_key"), message.get("error"), message.get("allow_reconnect")
            )
        elif kind == ACK:
            future = self._pending_acks.get(message.get("request_id") or "")
            if future is not None and not future.done():
                future.set_result(message)

    async def _layer_heartbeat(self) -> None:
        """Tell the other processes we are alive; drop newly dead processes' channels from our groups."""
        if self.channel_name is None:
            return
        await mark_alive(self.channel_name)
        if is_redis_core(self.layer):
            # RedisChannelLayer keeps a dead process's channel in its groups (and fills it) until
            # group_expiry: take newly dead channels out of the groups this process is in.
            dead = await dead_channels() - self._pruned
            for group in list(self._joined) if dead else ():
                for channel in dead:
                    await self.layer.group_discard(group, channel)
            self._pruned |= dead

    async def _liveness_loop(self) -> None:
        """Every ``ALIVE_INTERVAL``: the layer heartbeat; on a failure, recover. Never blocks the sweep."""
        while True:
            await asyncio.sleep(ALIVE_INTERVAL)
            try:
                await self._layer_heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("signalr_groups: the shared Redis is unreachable (%s)", exc)
                await self._recover()

    async def _heartbeat_loop(self) -> None:
        settings = get_hub_settings()
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(settings.heartbeat_interval)
            now = time.monotonic()
            for connection in list(self.connections.values()):
                try:
                    connection.heartbeat(now)
                except Exception:
                    logger.exception("signalr_groups: heartbeat failed for connection %s", connection.connection_id)
            if self.access_until:
                try:
                    await self._expire_group_access()
                except Exception:
                    logger.exception("signalr_groups: expiring group access failed")
            if self.layer is not None and now - last_refresh >= settings.layer_group_refresh_interval:
                # channels-redis expires memberships after group_expiry: refresh the live ones.
                last_refresh = now
                for group in list(self._joined):
                    with contextlib.suppress(Exception):
                        await self.layer.group_add(group, self.channel_name)


_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, HubLifetimeManager]] = (
    weakref.WeakKeyDictionary()
)


def running_managers() -> list[HubLifetimeManager]:
    """The running managers of every hub in the running event loop."""
    managers = _managers.get(asyncio.get_running_loop()) or {}
    return [manager for manager in managers.values() if manager.running]


def get_manager(hub_key: str, *, create: bool = False) -> HubLifetimeManager | None:
    """Return the manager of ``hub_key`` for the running event loop (creating it if asked)."""
    loop = asyncio.get_running_loop()
    managers = _managers.get(loop)
    if managers is None:
        if not create:
            return None
        managers = _managers[loop] = {}
    manager = managers.get(hub_key)
    if manager is None and create:
        manager = managers[hub_key] = HubLifetimeManager(hub_key, get_layer())
    return manager


def layer_to_ask(hub_key: str, layer_group: str) -> tuple[HubLifetimeManager | None, Any]:
    """This loop's manager of a hub, and the layer to reach ``layer_group``'s other members through.

    The layer is ``None`` when no other process can be in that layer group (no layer, or the
    in-memory layer showing only our own channel): the local registry is then the whole answer,
    and no layer message is needed.
    """
    manager = get_manager(hub_key)
    layer = manager.layer if manager is not None else get_layer()
    own = manager.channel_name if manager is not None else None
    if layer is None or not may_have_other_members(layer, layer_group, own):
        return manager, None
    return manager, layer
