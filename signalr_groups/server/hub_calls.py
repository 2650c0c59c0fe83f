"""Calling into a hub: a fresh hub instance per call, the hub filters around it, and the error texts.

As ASP.NET Core's ``DefaultHubDispatcher`` does for each invocation and lifecycle event: the
instance gets the caller's context, clients and groups; an ``async def`` runs on the loop, a plain
``def`` in Django's worker thread (where the ORM is safe); errors read as .NET words them.
"""

from __future__ import annotations

import inspect
from typing import Any, Final

from channels.db import database_sync_to_async

from signalr_groups import metrics
from signalr_groups.conf import HubSettings
from signalr_groups.exceptions import HubError
from signalr_groups.hubs.caller_context import HubCallerContext
from signalr_groups.hubs.clients import HubCallerClients
from signalr_groups.hubs.filters import (
    HubInvocationContext,
    HubLifetimeContext,
    run_invoke,
    run_on_connected,
    run_on_disconnected,
)
from signalr_groups.hubs.groups import GroupManager
from signalr_groups.hubs.hub import Hub
from signalr_groups.hubs.methods import HubMethod

#: The Close error of a connection that ended because of an error.
GENERIC_CLOSE_ERROR: Final = "Connection closed with an error."


class HubCalls:
    """One connection's calls into its hub."""

    __slots__ = ("context", "hub", "settings")

    def __init__(self, hub: type[Hub], context: HubCallerContext, settings: HubSettings) -> None:
        self.hub = hub
        self.context = context
        self.settings = settings

    def make_hub(self) -> Hub:
        """A hub instance for one invocation or lifecycle event."""
        hub = self.hub()
        hub.context = self.context
        hub_key = self.hub.hub_key()
        hub.clients = HubCallerClients(hub_key, self.context.connection_id)
        hub.groups = GroupManager(hub_key)
        return hub

    async def call_method(self, method: HubMethod, arguments: list[Any]) -> Any:
        """Call a hub method on a new hub instance, inside the hub filters (a plain ``def`` in a worker thread).

        For a streaming method the result is its async generator, not yet iterated.
        """
        hub = self.make_hub()

        async def call(invocation: HubInvocationContext) -> Any:
            function = getattr(invocation.hub, method.python_name)
            if method.is_stream or method.is_async:
                result = function(*invocation.arguments)
                return result if method.is_stream else await result
            return await database_sync_to_async(function)(*invocation.arguments)

        filters = self.hub.hub_filters()
        invocation = HubInvocationContext(hub, method, list(arguments), self.context)
        since = metrics.started()
        try:
            result = await call(invocation) if not filters else await run_invoke(filters, invocation, call)
        except HubError:
            metrics.invoked(self.hub.hub_key(), method.signalr_name, "hub_error", since)
            raise
        except BaseException:
            metrics.invoked(self.hub.hub_key(), method.signalr_name, "error", since)
            raise
        metrics.invoked(self.hub.hub_key(), method.signalr_name, "ok", since)
        return result

    async def call_lifecycle(self, name: str, *args: Any) -> None:
        """Run ``on_connected``, ``on_disconnected``, ... (a plain ``def`` in a worker thread).

        ``on_connected`` and ``on_disconnected`` run inside the hub filters.
        """
        hub = self.make_hub()

        async def call(*call_args: Any) -> None:
            function = getattr(hub, name)
            if inspect.iscoroutinefunction(function):
                await function(*call_args)
            else:
                await database_sync_to_async(function)(*call_args)

        filters = self.hub.hub_filters()
        if filters and name == "on_connected":
            await run_on_connected(filters, HubLifetimeContext(hub, self.context), lambda _context: call())
        elif filters and name == "on_disconnected":
            context = HubLifetimeContext(hub, self.context)
            await run_on_disconnected(filters, context, lambda _context, exception: call(exception), *args)
        else:
            await call(*args)

    def error_text(self, target: str, exc: BaseException | None) -> str:
        """The Completion (or Close) error of a failed invocation or ``on_connected``, as ASP.NET Core words it."""
        if target == "on_connected":
            base = GENERIC_CLOSE_ERROR
        else:
            base = f"An unexpected error occurred invoking '{target}' on the server."
        return self.described(base, exc)

    def described(self, base: str, exc: BaseException | None) -> str:
        """``base``, with a HubError's text (always) or any exception's (with ``DETAILED_ERRORS``)."""
        if isinstance(exc, HubError):
            return f"{base} HubException: {exc}"
        if exc is not None and self.settings.detailed_errors:
            return f"{base} {type(exc).__name__}: {exc}"
        return base
