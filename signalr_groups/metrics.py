"""Prometheus metrics (``prometheus-client``), registered on its default registry.

Scrape them from the view :func:`signalr_groups.routing.metrics_path` mounts, or from any other
``prometheus-client`` exporter of the process (``django-prometheus``'s ``/metrics`` shows them
too: it exports the same default registry). With several server processes on a host, set
``PROMETHEUS_MULTIPROC_DIR`` for every process (prometheus-client's multiprocess mode): each
process's endpoint then reports the sum of all of them; connection gauges count live processes only.

Everything here is cheap on the hot path: a send adds to three counters once (not once per
recipient), label children are looked up once per hub and cached, and ``METRICS = False`` turns
every update into a settings lookup and a branch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram

from signalr_groups.conf import get_hub_settings

_PREFIX: Final = "signalr_groups"

CONNECTIONS: Final = Gauge(
    f"{_PREFIX}_connections",
    "Open connections (handshake answered), by hub, transport and hub protocol.",
    ["hub", "transport", "protocol"],
    multiprocess_mode="livesum",
)
CONNECTS: Final = Counter(
    f"{_PREFIX}_connects", "Connections opened (handshake answered).", ["hub", "transport", "protocol"]
)
DISCONNECTS: Final = Counter(f"{_PREFIX}_disconnects", "Connections ended, by reason.", ["hub", "reason"])
INVOCATIONS: Final = Counter(
    f"{_PREFIX}_invocations", "Hub method calls, by outcome (ok, hub_error, error).", ["hub", "method", "outcome"]
)
INVOCATION_SECONDS: Final = Histogram(
    f"{_PREFIX}_invocation_seconds",
    "How long hub methods ran (a streaming method: until its generator was made).",
    ["hub", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES_SENT: Final = Counter(
    f"{_PREFIX}_messages_sent",
    "Sends (clients.*.send), by the kind of address (all, group, user, ...).",
    ["hub", "address"],
)
DELIVERIES: Final = Counter(f"{_PREFIX}_deliveries", "Messages queued to this process's connections.", ["hub"])
LAYER_SENT: Final = Counter(f"{_PREFIX}_layer_messages_sent", "Channel-layer messages sent, by type.", ["type"])
LAYER_RECEIVED: Final = Counter(
    f"{_PREFIX}_layer_messages_received",
    "Channel-layer messages received by lifetime managers, by type.",
    ["hub", "type"],
)
OUTBOX_OVERFLOWS: Final = Counter(
    f"{_PREFIX}_outbox_overflows", "Connections closed because their client did not read (OUTBOX_MAX_BYTES).", ["hub"]
)
LAYER_DROPPED: Final = Counter(
    f"{_PREFIX}_layer_messages_dropped", "Channel-layer messages channels-redis dropped for capacity."
)
REVOCATIONS: Final = Counter(
    f"{_PREFIX}_revocations", "Access revocations applied (group grants by cause, and account-wide).", ["cause"]
)
REVOCATION_SECONDS: Final = Histogram(
    f"{_PREFIX}_revocation_seconds",
    "From a group-access change until every process holding the user's connections applied it.",
    ["cause"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAYER_UP: Final = Gauge(
    f"{_PREFIX}_layer_up",
    "1 while a hub's lifetime manager is subscribed to the channel layer, 0 while it recovers.",
    ["hub"],
    multiprocess_mode="liveall",
)


def enabled() -> bool:
    """Whether metrics are collected (``SIGNALR_GROUPS["METRICS"]``)."""
    return get_hub_settings().metrics


class _Children:
    """Label children cached by their label values (``labels()`` takes a lock and builds a tuple)."""

    __slots__ = ("_by_key", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._by_key: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._by_key.get(values)
        if child is None:
            child = self._by_key[values] = self._metric.labels(*values)
        return child


_connections = _Children(CONNECTIONS)
_connects = _Children(CONNECTS)
_disconnects = _Children(DISCONNECTS)
_invocations = _Children(INVOCATIONS)
_invocation_seconds = _Children(INVOCATION_SECONDS)
_sent = _Children(MESSAGES_SENT)
_deliveries = _Children(DELIVERIES)
_layer_sent = _Children(LAYER_SENT)
_layer_received = _Children(LAYER_RECEIVED)
_overflows = _Children(OUTBOX_OVERFLOWS)
_layer_up = _Children(LAYER_UP)


def connection_opened(hub: str, transport: str, protocol: str) -> None:
    """A connection's handshake was answered."""
    if enabled():
        _connections(hub, transport, protocol).inc()
        _connects(hub, transport, protocol).inc()


def connection_closed(hub: str, transport: str, protocol: str, reason: str) -> None:
    """A connection counted by :func:`connection_opened` ended."""
    if enabled():
        _connections(hub, transport, protocol).dec()
        _disconnects(hub, reason).inc()


def invocation(hub: str, method: str) -> Callable[[str], None]:
    """Start timing a hub method call; call the result with its outcome when it ends."""
    if not enabled():
        return _ignore
    started = time.perf_counter()

    def done(outcome: str) -> None:
        _invocation_seconds(hub, method).observe(time.perf_counter() - started)
        _invocations(hub, method, outcome).inc()

    return done


def _ignore(outcome: str) -> None:
    pass


def sent(hub: str, address: str) -> None:
    """One send (whatever the number of recipients)."""
    if enabled():
        _sent(hub, address).inc()


def delivered(hub: str, count: int) -> None:
    """``count`` messages queued to this process's connections by one send."""
    if count and enabled():
        _deliveries(hub).inc(count)


def layer_sent(kind: str) -> None:
    """One channel-layer message sent."""
    if enabled():
        _layer_sent(kind).inc()


def layer_received(hub: str, kind: str) -> None:
    """One channel-layer message received by a hub's lifetime manager."""
    if enabled():
        _layer_received(hub, kind).inc()


def outbox_overflow(hub: str) -> None:
    """A connection was closed because its client did not read."""
    if enabled():
        _overflows(hub).inc()


def layer_dropped(count: int) -> None:
    """channels-redis dropped ``count`` messages for capacity."""
    if enabled():
        LAYER_DROPPED.inc(count)


def revoked(cause: str, seconds: float | None = None) -> None:
    """A revocation was applied (``seconds``: until the last process holding the user's connections applied it)."""
    if enabled():
        REVOCATIONS.labels(cause).inc()
        if seconds is not None:
            REVOCATION_SECONDS.labels(cause).observe(seconds)


def layer_up(hub: str, up: bool) -> None:
    """A hub's lifetime manager is (or is no longer) subscribed to the channel layer."""
    if enabled():
        _layer_up(hub).set(1 if up else 0)


def forget_layer(hub: str) -> None:
    """A hub's lifetime manager stopped: no layer gauge for it."""
    if enabled():
        _layer_up(hub).set(0)
