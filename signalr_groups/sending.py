"""The one send path shared by hubs and hub contexts: serialize once, deliver locally, publish once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from signalr_groups.addressing import Address
from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import InvalidGroupNameError, InvalidTargetError
from signalr_groups.grants import GroupAccessDeniedError
from signalr_groups.layers import get_layer, may_have_other_members
from signalr_groups.lifetime import ABORT, GROUP_ACTION, SEND, get_manager, layer_to_ask
from signalr_groups.protocol.json import write_invocation


def check_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidGroupNameError`.

    Group names are any non-empty string up to ``MAX_GROUP_NAME_LENGTH`` characters (default
    256): Unicode, spaces and punctuation included, compared exactly (case-sensitive, no
    Unicode normalisation).
    """
    if not isinstance(name, str):
        raise InvalidGroupNameError(f"A group name must be a string, not {type(name).__name__}.")
    if not name:
        raise InvalidGroupNameError("A group name must not be empty.")
    limit = get_hub_settings().max_group_name_length
    if len(name) > limit:
        raise InvalidGroupNameError(f"A group name must be at most {limit} characters long (got {len(name)}).")
    return name


def check_ids(values: Iterable[object], what: str) -> tuple[str, ...]:
    """Return ``values`` as a tuple of strings, or raise ``TypeError`` naming ``what``."""
    if isinstance(values, str):
        raise TypeError(f"Expected a list of {what}s, got a single string {values!r}.")
    result: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"A {what} must be a string, not {type(value).__name__}.")
        result.append(value)
    return tuple(result)


async def send(hub_key: str, address: Address, target: object, arguments: tuple[Any, ...] | list[Any]) -> None:
    """Send an invocation of client method ``target`` to ``address``.

    The record is serialized once; local recipients get it in-process; at most one
    channel-layer message carries it to the other processes. Like SignalR's ``SendAsync``
    this completes once the message is queued, not when clients have read it.
    """
    if not isinstance(target, str) or not target:
        raise InvalidTargetError("The client method name (target) must be a non-empty string.")
    if address.kind != "all" and not address.names:
        return
    record = write_invocation(target, arguments)
    manager = get_manager(hub_key)
    if manager is not None and manager.running:
        manager.deliver_local(address, record)
        if manager.should_yield():
            # An outbox is filling up or the loop has been busy: let the writers (and everyone
            # else) run, so a burst of sends cannot trip healthy clients' outbox bounds.
            await asyncio.sleep(0)
        if not manager.needs_layer(address):
            return
        layer, origin = manager.layer, manager.channel_name
    else:
        layer, origin = get_layer(), None
        if layer is None or not may_have_other_members(layer, address.layer_group(hub_key), None):
            return
    await layer.group_send(
        address.layer_group(hub_key),
        {"type": SEND, "origin": origin or "", "address": address.to_wire(), "payload": record},
    )


async def _remote_command(hub_key: str, message: dict[str, Any]) -> bool:
    """Send a command to every process of the hub and wait for the owner's acknowledgement."""
    all_group = Address("all").layer_group(hub_key)
    manager, layer = layer_to_ask(hub_key, all_group)
    if layer is None:
        return False
    timeout = get_hub_settings().group_action_timeout
    if manager is not None and manager.running:
        # In a server process the manager's own channel carries the acknowledgement: no extra
        # channel to create, subscribe to, or cancel a receive on.
        return await manager.request(all_group, message, timeout)
    reply_to = await layer.new_channel()
    try:
        await layer.group_send(all_group, {**message, "reply_to": reply_to})
        ack = await asyncio.wait_for(layer.receive(reply_to), timeout)
    except TimeoutError:
        return False  # the cancelled receive released the reply channel
    except BaseException:
        await release_channel(layer, reply_to)
        raise
    await release_channel(layer, reply_to)
    if isinstance(ack, dict) and ack.get("error"):
        raise GroupAccessDeniedError(str(ack["error"]))
    return True


async def release_channel(layer: Any, channel: str) -> None:
    """Free a one-off reply channel.

    Channels has no "delete channel" call; layers clean up when a ``receive`` is cancelled
    (``RedisPubSubChannelLayer`` unsubscribes then), so start one and cancel it.
    """
    waiter = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await waiter


async def group_action(hub_key: str, action: str, connection_id: str, group: str) -> bool:
    """Add (``action="add"``) or remove a connection to/from a group, wherever the connection lives.

    Returns True once the owning process applied it, False if no process owns the connection
    (it has disconnected, or never existed) within ``GROUP_ACTION_TIMEOUT``.
    """
    check_group_name(group)
    if not isinstance(connection_id, str):
        raise TypeError("A connection id must be a string.")
    manager = get_manager(hub_key)
    if manager is not None and connection_id in manager.connections:
        if action == "add":
            return await manager.add_local(connection_id, group)
        return await manager.remove_local(connection_id, group)
    return await _remote_command(
        hub_key, {"type": GROUP_ACTION, "action": action, "connection_id": connection_id, "group": group}
    )


async def abort(hub_key: str, connection_id: str, error: str | None, allow_reconnect: bool | None) -> bool:
    """Close a connection wherever it lives (with a Close message); True if it was found."""
    manager = get_manager(hub_key)
    if manager is not None:
        connection = manager.connections.get(connection_id)
        if connection is not None:
            connection.abort(error, allow_reconnect)
            return True
    return await _remote_command(
        hub_key, {"type": ABORT, "connection_id": connection_id, "error": error, "allow_reconnect": allow_reconnect}
    )
