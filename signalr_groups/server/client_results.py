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
from collections.abc import Callable
from typing import Any, Final

from signalr_groups.exceptions import ClientGoneError, ClientResultError, ClientResultTimeoutError
from signalr_groups.protocol.hub_protocols import Frame, HubProtocol
from signalr_groups.protocol.messages import CompletionMessage

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
