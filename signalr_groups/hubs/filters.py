"""Hub filters: code around every hub method call and every connect and disconnect (ASP.NET Core's ``IHubFilter``).

A filter is any object with some of these methods (a subclass of :class:`HubFilter` gets
pass-through defaults for the others)::

    async def invoke(self, invocation: HubInvocationContext, next) -> Any
    async def on_connected(self, context: HubLifetimeContext, next) -> None
    async def on_disconnected(self, context: HubLifetimeContext, exception, next) -> None

Global filters come from ``SIGNALR_GROUPS["HUB_FILTERS"]``, a hub's own from ``Hub.filters``
(instances, or classes made once with no arguments); they run in that order, the first one
outermost. ``invoke`` decides whether the method runs (``await next(invocation)``), may change
the arguments, the result or the error, and may short-circuit with a result or an exception (a
:class:`~signalr_groups.exceptions.HubError`'s text reaches the caller).

Two ship with the app: :class:`LoggingFilter` and :class:`RateLimitFilter`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from signalr_groups.exceptions import HubError
from signalr_groups.hubs.caller_context import HubCallerContext
from signalr_groups.hubs.methods import HubMethod
from signalr_groups.rate_limits import KeyedRateLimiter

logger = logging.getLogger(__name__)

_FILTER_METHODS = ("invoke", "on_connected", "on_disconnected")


@dataclass(frozen=True, slots=True)
class HubInvocationContext:
    """One hub method call, as a filter sees it: the hub instance, the method, its arguments, the caller."""

    hub: Any
    method: HubMethod
    arguments: list[Any]
    context: HubCallerContext

    @property
    def method_name(self) -> str:
        """The method's wire name (``SendMessage``)."""
        return self.method.signalr_name

    def with_arguments(self, arguments: list[Any]) -> HubInvocationContext:
        """The same call with other arguments (for a filter that rewrites them)."""
        return replace(self, arguments=list(arguments))


@dataclass(frozen=True, slots=True)
class HubLifetimeContext:
    """A connect or disconnect, as a filter sees it: the hub instance and the connection's context."""

    hub: Any
    context: HubCallerContext


InvokeNext = Callable[[HubInvocationContext], Awaitable[Any]]
ConnectedNext = Callable[[HubLifetimeContext], Awaitable[None]]
DisconnectedNext = Callable[[HubLifetimeContext, BaseException | None], Awaitable[None]]


class HubFilter:
    """Base class for filters: every hook passes through; override the ones you need."""

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        """Around a hub method call: return ``await next(invocation)`` to run it."""
        return await next(invocation)

    async def on_connected(self, context: HubLifetimeContext, next: ConnectedNext) -> None:
        """Around ``Hub.on_connected``."""
        await next(context)

    async def on_disconnected(
        self, context: HubLifetimeContext, exception: BaseException | None, next: DisconnectedNext
    ) -> None:
        """Around ``Hub.on_disconnected``."""
        await next(context, exception)


def as_filters(items: Sequence[Any], where: str) -> tuple[Any, ...]:
    """Filter instances from ``items`` (instances, or classes made with no arguments); TypeError if one is none."""
    filters: list[Any] = []
    for item in items:
        instance = item() if isinstance(item, type) else item
        if not any(callable(getattr(instance, name, None)) for name in _FILTER_METHODS):
            raise TypeError(f"{where}: {item!r} is not a hub filter (it has none of {', '.join(_FILTER_METHODS)}).")
        filters.append(instance)
    return tuple(filters)


async def run_invoke(filters: Sequence[Any], invocation: HubInvocationContext, call: InvokeNext) -> Any:
    """Run ``call`` inside the ``invoke`` hooks of ``filters`` (the first one outermost)."""
    chain = call
    for hub_filter in reversed(filters):
        hook = getattr(hub_filter, "invoke", None)
        if hook is not None:
            chain = _link_invoke(hook, chain)
    return await chain(invocation)


def _link_invoke(hook: Callable[[HubInvocationContext, InvokeNext], Awaitable[Any]], inner: InvokeNext) -> InvokeNext:
    async def link(invocation: HubInvocationContext) -> Any:
        return await hook(invocation, inner)

    return link


async def run_on_connected(filters: Sequence[Any], context: HubLifetimeContext, call: ConnectedNext) -> None:
    """Run ``call`` inside the ``on_connected`` hooks of ``filters``."""
    chain = call
    for hub_filter in reversed(filters):
        hook = getattr(hub_filter, "on_connected", None)
        if hook is not None:
            chain = _link_connected(hook, chain)
    await chain(context)


def _link_connected(
    hook: Callable[[HubLifetimeContext, ConnectedNext], Awaitable[None]], inner: ConnectedNext
) -> ConnectedNext:
    async def link(context: HubLifetimeContext) -> None:
        await hook(context, inner)

    return link


async def run_on_disconnected(
    filters: Sequence[Any], context: HubLifetimeContext, call: DisconnectedNext, exception: BaseException | None
) -> None:
    """Run ``call`` inside the ``on_disconnected`` hooks of ``filters``."""
    chain = call
    for hub_filter in reversed(filters):
        hook = getattr(hub_filter, "on_disconnected", None)
        if hook is not None:
            chain = _link_disconnected(hook, chain)
    await chain(context, exception)


def _link_disconnected(
    hook: Callable[[HubLifetimeContext, BaseException | None, DisconnectedNext], Awaitable[None]],
    inner: DisconnectedNext,
) -> DisconnectedNext:
    async def link(context: HubLifetimeContext, exception: BaseException | None) -> None:
        await hook(context, exception, inner)

    return link


# ---------------------------------------------------------------------------- the filters that ship


class LoggingFilter(HubFilter):
    """Logs every call (method, caller, duration, outcome) and every connect and disconnect.

    To the ``signalr_groups.calls`` logger at INFO (failures at WARNING); arguments are not logged,
    they may hold personal data.
    """

    logger = logging.getLogger("signalr_groups.calls")

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        """Time the call and log its outcome."""
        started = time.perf_counter()
        who = invocation.context.user_identifier or "anonymous"
        try:
            result = await next(invocation)
        except Exception as exc:
            self.logger.warning(
                "%s by %s (%s) failed after %.1f ms: %s",
                invocation.method_name,
                who,
                invocation.context.connection_id,
                (time.perf_counter() - started) * 1000,
                type(exc).__name__,
            )
            raise
        self.logger.info(
            "%s by %s (%s) took %.1f ms",
            invocation.method_name,
            who,
            invocation.context.connection_id,
            (time.perf_counter() - started) * 1000,
        )
        return result

    async def on_connected(self, context: HubLifetimeContext, next: ConnectedNext) -> None:
        """Log the connect."""
        self.logger.info("connected: %s (%s)", context.context.user_identifier, context.context.connection_id)
        await next(context)

    async def on_disconnected(
        self, context: HubLifetimeContext, exception: BaseException | None, next: DisconnectedNext
    ) -> None:
        """Log the disconnect and why."""
        reason = f": {exception}" if exception is not None else ""
        self.logger.info(
            "disconnected: %s (%s)%s", context.context.user_identifier, context.context.connection_id, reason
        )
        await next(context, exception)


class RateLimitFilter(HubFilter):
    """A token bucket per user (or per connection): over the rate, the call fails and nothing runs.

    ``RateLimitFilter(rate=5)`` allows 5 calls a second on average per user identifier (bursts of
    5), ``per="connection"`` counts each connection on its own; anonymous callers count per
    connection. ``methods`` limits it to some hub methods (wire names, any case). The caller gets
    a Completion error ending in ``HubException: Too many calls: at most 5 a second.``
    """

    def __init__(self, rate: float = 5.0, *, per: str = "user", methods: Sequence[str] | None = None) -> None:
        if per not in ("user", "connection"):
            raise ValueError("RateLimitFilter(per=...) must be 'user' or 'connection'.")
        if rate <= 0:
            raise ValueError("RateLimitFilter(rate=...) must be positive.")
        self.rate = rate
        self.per = per
        self.methods = None if methods is None else frozenset(name.lower() for name in methods)
        self._limiter = KeyedRateLimiter(rate)

    def _key(self, context: HubCallerContext) -> str:
        if self.per == "user" and context.user_identifier is not None:
            return "user:" + context.user_identifier
        return "connection:" + context.connection_id

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        """Refuse the call when its user (or connection) is over the rate."""
        if self.methods is not None and invocation.method_name.lower() not in self.methods:
            return await next(invocation)
        if not self._limiter.allow(self._key(invocation.context)):
            raise HubError(f"Too many calls: at most {self.rate:g} a second.")
        return await next(invocation)
