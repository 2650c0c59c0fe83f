"""Client results: the server invokes a client method and awaits its answer (``Clients.Client(id).InvokeAsync``).

The server sends an Invocation with an id of its own (``srv-<n>``); the client answers with a
Completion of that id (a result, or an error). Each pending call has its future: a Completion
resolves it (never another's: ids are per connection and unique), a timeout or the connection's end
fails it. A Completion that comes after its call timed out is ignored, as ASP.NET Core ignores it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from signalr_groups.backplane.messages import CLIENT_INVOKE, RecentIds
from signalr_groups.backplane.rpc import answer
from signalr_groups.exceptions import (
    ClientGoneError,
    ClientResultError,
    ClientResultTimeoutError,
    SignalRGroupsError,
)
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.registry import LocalConnection
from signalr_groups.protocol.hub_protocols import Frame, HubProtocol
from signalr_groups.protocol.json import encode_json, loads_strict
from signalr_groups.protocol.messages import CompletionMessage

logger = logging.getLogger(__name__)

#: Ids of calls given up on, remembered so that their late answers are ignored (not a protocol error).
LATE_IDS: Final = 4096
#: Pending client results one connection may have at once.
MAX_PENDING: Final = 1000


class ClientResults:
    """The pending client results of one connection."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._late: collections.deque[str] | None = None  # (made when first needed)
        self._ids = itertools.count(1)
        self._closed = False

    async def invoke(
        self,
        write: Callable[[Frame], None],
        protocol: HubProtocol,
        target: str,
        arguments: list[Any],
        timeout: float,
    ) -> Any:
        """Send the invocation and await the client's result (see the module docstring for the errors)."""
        if self._closed:
            raise ClientGoneError("The connection is closed.")
        if len(self._pending) >= MAX_PENDING:
            raise ClientResultError(f"Too many client results pending on this connection (more than {MAX_PENDING}).")
        invocation_id = f"srv-{next(self._ids)}"
        frame = protocol.client_invocation(invocation_id, target, arguments)  # (a PayloadError propagates)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = future
        try:
            write(frame)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            raise ClientResultTimeoutError(f"The client did not answer {target!r} within {timeout:g} s.") from exc
        finally:
            if self._pending.pop(invocation_id, None) is not None:
                # Given up on (a timeout, or the awaiting call cancelled): its late answer is ignored.
                if self._late is None:
                    self._late = collections.deque(maxlen=LATE_IDS)
                self._late.append(invocation_id)

    def complete(self, message: CompletionMessage) -> bool:
        """Route a client's Completion; False if it answers none of this connection's calls."""
        future = self._pending.pop(message.invocation_id, None)
        if future is None:
            return self._late is not None and message.invocation_id in self._late
        if not future.done():
            if message.error is not None:
                future.set_exception(ClientResultError(message.error))
            else:
                future.set_result(message.result)
        return True

    def close(self) -> None:
        """The connection ended: every pending call fails with :class:`ClientGoneError`."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ClientGoneError("The connection closed before the client answered."))


class ClientResultsRelay(ManagerExtension):
    """Asks this process's connections for client results that other processes want.

    The asking process sends :data:`~signalr_groups.backplane.messages.CLIENT_INVOKE` to the hub's
    processes (:func:`signalr_groups.lifetime.sending.invoke_client`); the owner acknowledges at once,
    asks its client, and answers with the result as JSON, or with why there is none.
    """

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        self._seen = RecentIds()

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """The client-result requests of other processes."""
        return {CLIENT_INVOKE: self._on_client_invoke}

    async def _on_client_invoke(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.manager.registry.connections.get(message["connection_id"])
        if connection is None:
            return None  # another process owns it
        request_id = message.get("request_id")
        if request_id is not None and not self._seen.first_time(str(request_id)):
            return None  # a layer's redelivery (see RecentIds): the client is asked once
        self.manager.spawn(self._answer(connection, message))
        return None

    async def _answer(self, connection: LocalConnection, message: dict[str, Any]) -> None:
        """Acknowledge at once, then answer with the client's result (as JSON) or why there is none."""
        layer, channel = self.manager.layer, self.manager.channel_name
        await answer(layer, message, channel, body={"accepted": True})
        body: dict[str, Any]
        try:
            arguments = loads_strict(str(message["arguments"]))
            result = await connection.invoke_client(str(message["target"]), list(arguments), float(message["timeout"]))
            body = {"result": encode_json(result)}
        except ClientResultTimeoutError as exc:
            body = {"error": str(exc), "kind": "timeout"}
        except ClientGoneError as exc:
            body = {"error": str(exc), "kind": "gone"}
        except (ClientResultError, SignalRGroupsError) as exc:
            body = {"error": str(exc), "kind": "client"}
        except Exception as exc:
            logger.exception("signalr_groups: a client result for %s failed", message.get("connection_id"))
            body = {"error": f"The client result failed: {type(exc).__name__}", "kind": "client"}
        await answer(layer, message, channel, body=body)
