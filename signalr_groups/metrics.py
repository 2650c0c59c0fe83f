"""Prometheus metrics, counted in plain Python on the hot path and exported by a ``prometheus-client`` collector.

The collector is registered on prometheus-client's default registry, so the view that
:func:`signalr_groups.routing.metrics_path` mounts shows them, and so does any other exporter of
that registry in the process (``django-prometheus``'s ``/metrics`` included). The numbers are
**per process**: scrape every server process at its own address (each listens on its own port
behind the load balancer; Prometheus labels each target with ``instance``) and sum in PromQL.

A send adds to two counters once (not once per recipient) and a hub method call to one
histogram; each is a dictionary update, with no lock and no prometheus-client call: the
benchmark (bench/, metrics on and off in the same run) shows what that costs. ``METRICS = False``
turns every update into a settings lookup and a branch.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from signalr_groups.conf import get_hub_settings

_PREFIX: Final = "signalr_groups"

#: Upper bounds (seconds) of the invocation-duration histogram's buckets.
INVOCATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) of the revocation histogram's buckets.
REVOCATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The values, keyed by label values. Updated on the event loop (a dict update is atomic under the
# GIL; the rare updates from other threads at worst lose a count to a race, never corrupt).
_connections: dict[tuple[str, str, str], int] = {}
_connects: dict[tuple[str, str, str], int] = {}
_disconnects: dict[tuple[str, str], int] = {}
_invocations: dict[tuple[str, str, str], int] = {}
_sent: dict[tuple[str, str], int] = {}
_deliveries: dict[str, int] = {}
_layer_sent: dict[str, int] = {}
_layer_received: dict[tuple[str, str], int] = {}
_overflows: dict[str, int] = {}
_dropped: list[int] = [0]
_revocations: dict[str, int] = {}
_layer_up: dict[str, int] = {}


class _Histogram:
    """Bucket counts, count and sum of one label set."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


_invocation_seconds: dict[tuple[str, str], _Histogram] = {}
_revocation_seconds: dict[str, _Histogram] = {}


def enabled() -> bool:
    """Whether metrics are collected (``SIGNALR_GROUPS["METRICS"]``)."""
    return get_hub_settings().metrics


def connection_opened(hub: str, transport: str, protocol: str) -> None:
    """A connection's handshake was answered."""
    if enabled():
        key = (hub, transport, protocol)
        _connections[key] = _connections.get(key, 0) + 1
        _connects[key] = _connects.get(key, 0) + 1


def connection_closed(hub: str, transport: str, protocol: str, reason: str) -> None:
    """A connection counted by :func:`connection_opened` ended."""
    if enabled():
        key = (hub, transport, protocol)
        _connections[key] = max(0, _connections.get(key, 0) - 1)
        closed = (hub, reason)
        _disconnects[closed] = _disconnects.get(closed, 0) + 1


def started() -> float:
    """The time a hub method call starts, for :func:`invoked` (0 when metrics are off)."""
    return time.perf_counter() if enabled() else 0.0


def invoked(hub: str, method: str, outcome: str, since: float) -> None:
    """A hub method call that began at ``since`` (:func:`started`) ended with ``outcome`` (ok, hub_error, error)."""
    if not since:
        return
    elapsed = time.perf_counter() - since
    key = (hub, method)
    histogram = _invocation_seconds.get(key)
    if histogram is None:
        histogram = _invocation_seconds[key] = _Histogram(INVOCATION_BUCKETS)
    histogram.observe(elapsed)
    counted = (hub, method, outcome)
    _invocations[counted] = _invocations.get(counted, 0) + 1


def sent(hub: str, address: str) -> None:
    """One send (whatever the number of recipients) to an address of kind ``address`` (all, connections, groups, users)."""
    if enabled():
        key = (hub, address)
        _sent[key] = _sent.get(key, 0) + 1


def delivered(hub: str, count: int) -> None:
    """``count`` messages queued to this process's connections by one send."""
    if count and enabled():
        _deliveries[hub] = _deliveries.get(hub, 0) + count


def layer_sent(kind: str) -> None:
    """One channel-layer message sent."""
    if enabled():
        _layer_sent[kind] = _layer_sent.get(kind, 0) + 1


def layer_received(hub: str, kind: str) -> None:
    """One channel-layer message received by a hub's lifetime manager."""
    if enabled():
        key = (hub, kind)
        _layer_received[key] = _layer_received.get(key, 0) + 1


def outbox_overflow(hub: str) -> None:
    """A connection was closed because its client did not read."""
    if enabled():
        _overflows[hub] = _overflows.get(hub, 0) + 1


def layer_dropped(count: int) -> None:
    """channels-redis dropped ``count`` messages for capacity."""
    if enabled():
        _dropped[0] += count


def revoked(cause: str, seconds: float | None = None) -> None:
    """A revocation was applied (``seconds``: until the last process holding the user's connections applied it)."""
    if enabled():
        _revocations[cause] = _revocations.get(cause, 0) + 1
        if seconds is not None:
            histogram = _revocation_seconds.get(cause)
            if histogram is None:
                histogram = _revocation_seconds[cause] = _Histogram(REVOCATION_BUCKETS)
            histogram.observe(seconds)


def layer_up(hub: str, up: bool) -> None:
    """A hub's lifetime manager is (or is no longer) subscribed to the channel layer."""
    if enabled():
        _layer_up[hub] = 1 if up else 0


def forget_layer(hub: str) -> None:
    """A hub's lifetime manager stopped: no layer subscription for it."""
    if enabled():
        _layer_up[hub] = 0


def _counter(name: str, documentation: str, labels: list[str], values: dict[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{_PREFIX}_{name}", documentation, labels=labels)
    for key, value in list(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _gauge(name: str, documentation: str, labels: list[str], values: dict[Any, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{_PREFIX}_{name}", documentation, labels=labels)
    for key, value in list(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _histogram(name: str, documentation: str, labels: list[str], values: dict[Any, _Histogram]) -> Any:
    family = HistogramMetricFamily(f"{_PREFIX}_{name}", documentation, labels=labels)
    for key, histogram in list(values.items()):
        family.add_metric(
            list(key) if isinstance(key, tuple) else [key], histogram.cumulative(), sum_value=histogram.total
        )
    return family


class SignalRCollector(Collector):
    """Exports this process's metrics to prometheus-client (registered once, on the default registry)."""

    def collect(self) -> Iterator[Any]:
        """Every metric family, from the current values."""
        yield _gauge(
            "connections",
            "Open connections (handshake answered), by hub, transport and hub protocol.",
            ["hub", "transport", "protocol"],
            _connections,
        )
        yield _counter(
            "connects", "Connections opened (handshake answered).", ["hub", "transport", "protocol"], _connects
        )
        yield _counter("disconnects", "Connections ended, by reason.", ["hub", "reason"], _disconnects)
        yield _counter(
            "invocations",
            "Hub method calls, by outcome (ok, hub_error, error).",
            ["hub", "method", "outcome"],
            _invocations,
        )
        yield _histogram(
            "invocation_seconds",
            "How long hub methods ran (a streaming method: until its generator was made).",
            ["hub", "method"],
            _invocation_seconds,
        )
        yield _counter(
            "messages_sent",
            "Sends (clients.*.send), by the kind of address (all, connections, groups, users).",
            ["hub", "address"],
            _sent,
        )
        yield _counter("deliveries", "Messages queued to this process's connections.", ["hub"], _deliveries)
        yield _counter("layer_messages_sent", "Channel-layer messages sent, by type.", ["type"], _layer_sent)
        yield _counter(
            "layer_messages_received",
            "Channel-layer messages received by lifetime managers, by type.",
            ["hub", "type"],
            _layer_received,
        )
        yield _counter(
            "outbox_overflows",
            "Connections closed because their client did not read (OUTBOX_MAX_BYTES).",
            ["hub"],
            _overflows,
        )
        dropped = CounterMetricFamily(
            f"{_PREFIX}_layer_messages_dropped", "Channel-layer messages channels-redis dropped for capacity."
        )
        dropped.add_metric([], _dropped[0])
        yield dropped
        yield _counter(
            "revocations",
            "Access revocations applied (group grants by cause, and account-wide).",
            ["cause"],
            _revocations,
        )
        yield _histogram(
            "revocation_seconds",
            "From a group-access change until every process holding the user's connections applied it.",
            ["cause"],
            _revocation_seconds,
        )
        yield _gauge(
            "layer_up",
            "1 while a hub's lifetime manager is subscribed to the channel layer, 0 while it recovers or is stopped.",
            ["hub"],
            _layer_up,
        )


COLLECTOR: Final = SignalRCollector()
REGISTRY.register(COLLECTOR)
