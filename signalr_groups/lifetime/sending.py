"""The one send path shared by hubs and hub contexts, and commands for a connection wherever it lives.

A send is serialized once per hub protocol, delivered in-process to local recipients, and crosses the channel
layer at most once (one layer message per receiving process). A command (add to a group,
remove, abort) is applied at once to a local connection, else sent to every process of the hub
and applied by the owner, whose answer we wait for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from signalr_groups import metrics
from signalr_groups.addressing import Address
from signalr_groups.backplane.layer import get_layer, may_have_other_members
from signalr_groups.backplane.messages import ABORT, CLIENT_INVOKE, GROUP_ACTION, SEND, new_send_id
from signalr_groups.backplane.rpc import AcknowledgedButUnansweredError, ask_owner, ask_owner_with_ack
from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import (
    ClientGoneError,
    ClientResultError,
    ClientResultTimeoutError,
    GroupAccessDeniedError,
    InvalidTargetError,
)
from signalr_groups.lifetime.managers import get_manager, layer_to_ask
from signalr_groups.protocol.json import encode_json, loads_strict
from signalr_groups.protocol.serialized import SerializedInvocation
from signalr_groups.validation import check_group_name


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
    record = SerializedInvocation.of(target, arguments)
    metrics.sent(hub_key, address.kind)
    manager = get_manager(hub_key)
    if manager is not None and manager.running:
        pending = manager.deliver_local(address, record)
        if pending is not None:
            await pending  # a large fan-out, delivered in slices: return once every local member has it
        elif manager.should_yield():
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
    message = {
        "type": SEND,
        "origin": origin or "",
        "address": address.to_wire(),
        "payload": record.json,
        "id": new_send_id(),
    }
    if "messagepack" in get_hub_settings().protocols:
        # Both forms cross the layer (as ASP.NET Core's backplanes do): no process serializes it again.
        # A payload with no MessagePack form (an int beyond 64 bits) still reaches the JSON clients;
        # the MessagePack ones are skipped, and that is logged where they are.
        msgpack = record.msgpack
        if msgpack:
            message["msgpack"] = msgpack
    await layer.group_send(address.layer_group(hub_key), message)
    metrics.layer_sent(SEND)


#: Seconds beyond a client result's timeout that the asking process waits for the owner's answer.
CLIENT_RESULT_MARGIN = 5.0
#: A failed client result's kind, as the owner reports it, and the exception raised for it.
CLIENT_RESULT_ERRORS: dict[str, type[ClientResultError]] = {
    "client": ClientResultError,
    "timeout": ClientResultTimeoutError,
    "gone": ClientGoneError,
}


async def invoke_client(hub_key: str, connection_id: str, target: object, arguments: list[Any], timeout: float) -> Any:
    """Invoke client method ``target`` on one connection, wherever it lives, and return the client's result.

    Raises :class:`ClientResultError` (the client answered with an error),
    :class:`ClientResultTimeoutError` or :class:`ClientGoneError` (it closed, or no server holds it).
    Across processes the arguments and the result travel as JSON.
    """
    if not isinstance(target, str) or not target:
        raise InvalidTargetError("The client method name (target) must be a non-empty string.")
    manager = get_manager(hub_key)
    if manager is not None:
        connection = manager.connections.get(connection_id)
        if connection is not None:
            return await connection.invoke_client(target, list(arguments), timeout)
    all_group = Address("all").layer_group(hub_key)
    _manager, layer = layer_to_ask(hub_key, all_group)
    if layer is None:
        raise ClientGoneError(f"No server holds connection {connection_id!r}.")
    message = {
        "type": CLIENT_INVOKE,
        "connection_id": connection_id,
        "target": target,
        "arguments": encode_json(list(arguments)),
        "timeout": timeout,
    }
    ack_timeout = get_hub_settings().group_action_timeout
    try:
        # A fresh reply channel: the wait may outlast this process's manager (its last connection leaving).
        reply = await ask_owner_with_ack(layer, all_group, message, ack_timeout, timeout + CLIENT_RESULT_MARGIN)
    except AcknowledgedButUnansweredError as exc:
        raise ClientResultTimeoutError(f"The client did not answer {target!r} within {timeout:g} s.") from exc
    if reply is None:
        raise ClientGoneError(f"No server holds connection {connection_id!r}.")
    if "result" in reply.body:
        return loads_strict(str(reply.body["result"]))
    error = CLIENT_RESULT_ERRORS.get(str(reply.body.get("kind")), ClientResultError)
    raise error(str(reply.body.get("error") or "The client result failed."))


async def _command_owner(hub_key: str, message: dict[str, Any]) -> bool:
    """Send a command to every process of the hub; True once the owner applied it, False if none answered."""
    all_group = Address("all").layer_group(hub_key)
    manager, layer = layer_to_ask(hub_key, all_group)
    if layer is None:
        return False
    # In a server process the manager's own channel carries the answer.
    inbox = manager.replies if manager is not None and manager.running else None
    reply = await ask_owner(layer, all_group, message, get_hub_settings().group_action_timeout, inbox)
    if reply is None:
        return False
    if reply.error:
        raise GroupAccessDeniedError(reply.error)
    return True


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
    return await _command_owner(
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
    return await _command_owner(
        hub_key, {"type": ABORT, "connection_id": connection_id, "error": error, "allow_reconnect": allow_reconnect}
    )
