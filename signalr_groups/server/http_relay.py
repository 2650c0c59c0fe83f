"""Relaying an HTTP-transport request to the process that owns its connection (no sticky sessions).

The first request a process relays for a connection goes to every process of the hub (one layer
message); the owner acknowledges at once, and its answer names its channel, which this process
then remembers: later requests for that connection go to the owner alone. A connection nobody
owns is remembered too, for :data:`NO_OWNER_TTL` seconds, so that requests for a dead connection
(or an old token replayed) are answered 404 without a layer message each.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Final

from signalr_groups.addressing import Address
from signalr_groups.backplane.rpc import (
    AcknowledgedButUnansweredError,
    Reply,
    SharedInboxes,
    ask_owner,
    ask_owner_with_ack,
)
from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import SignalRGroupsError
from signalr_groups.lifetime.managers import layer_to_ask

logger = logging.getLogger(__name__)

#: Owners (and owner-less connections) remembered per process and hub, the oldest forgotten first.
CACHE_SIZE: Final = 10_000
#: Seconds a connection nobody owned is answered 404 without asking again.
NO_OWNER_TTL: Final = 30.0

#: Reply channels for relays: one per layer and event loop, whatever the state of the hub's manager
#: (a manager's own channel goes away when its last connection leaves, and with it a pending answer).
_INBOXES: Final = SharedInboxes()


class RelayUnavailableError(SignalRGroupsError):
    """The channel layer could not carry a relayed request (answered 503)."""


class Relay:
    """Relays one hub's HTTP-transport requests to their connections' owners."""

    def __init__(self, hub_key: str) -> None:
        self.hub_key = hub_key
        self._owners: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._no_owner: collections.OrderedDict[str, float] = collections.OrderedDict()

    def _remember(self, cache: collections.OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    def known_missing(self, connection_id: str) -> bool:
        """Whether a recent relay found no owner for the connection."""
        until = self._no_owner.get(connection_id)
        if until is None:
            return False
        if until < time.monotonic():
            del self._no_owner[connection_id]
            return False
        return True

    async def ask(
        self,
        kind: str,
        connection_id: str,
        fields: dict[str, Any],
        timeout: float,
        *,
        acknowledged: bool,
        remember_missing: bool = True,
        request_id_out: dict[str, str] | None = None,
    ) -> Reply | None:
        """Send a request to the connection's owner; its answer, or None if no process owns it.

        ``acknowledged``: the owner acknowledges at once and answers when done (a POST, a poll).
        Raises :class:`RelayUnavailableError` if the layer fails, or if an acknowledged request's
        answer does not come within ``timeout``.
        """
        if self.known_missing(connection_id):
            return None
        group = Address("all").layer_group(self.hub_key)
        _manager, layer = layer_to_ask(self.hub_key, group)
        if layer is None:
            return None
        message = {"type": kind, "connection_id": connection_id, **fields}
        ack_timeout = get_hub_settings().group_action_timeout
        try:
            inbox = await _INBOXES.get(layer)
            owner = self._owners.get(connection_id)
            for channel in (owner, None) if owner is not None else (None,):
                if acknowledged:
                    reply = await ask_owner_with_ack(
                        layer,
                        group,
                        message,
                        ack_timeout,
                        timeout,
                        inbox,
                        channel=channel,
                        request_id_out=request_id_out,
                    )
                else:
                    reply = await ask_owner(
                        layer,
                        group,
                        message,
                        ack_timeout if channel is not None else timeout,
                        inbox,
                        channel=channel,
                        request_id_out=request_id_out,
                    )
                if reply is not None:
                    if reply.channel:
                        self._remember(self._owners, connection_id, reply.channel)
                    return reply
                self._owners.pop(connection_id, None)  # gone from that process: ask everyone once
        except AcknowledgedButUnansweredError as exc:
            raise RelayUnavailableError(f"The process that owns the connection did not answer: {exc}") from exc
        except Exception as exc:
            logger.warning("signalr_groups: relaying a request for %s failed: %r", connection_id, exc)
            raise RelayUnavailableError("The server cannot reach its channel layer; retry.") from exc
        if remember_missing:
            self._remember(self._no_owner, connection_id, time.monotonic() + NO_OWNER_TTL)
        return None

    async def tell(self, kind: str, connection_id: str, fields: dict[str, Any]) -> None:
        """Send a message to the connection's owner (to every process if it is not known); no answer."""
        group = Address("all").layer_group(self.hub_key)
        _manager, layer = layer_to_ask(self.hub_key, group)
        if layer is None:
            return
        message = {"type": kind, "connection_id": connection_id, **fields}
        owner = self._owners.get(connection_id)
        try:
            if owner is not None:
                await layer.send(owner, message)
            else:
                await layer.group_send(group, message)
        except Exception as exc:
            logger.warning("signalr_groups: telling the owner of %s failed: %r", connection_id, exc)
