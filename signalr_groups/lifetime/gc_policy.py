"""Keep the cyclic garbage collector's full passes short: freeze what survives a wave of new connections.

CPython 3.11's collector is not incremental. A full (generation 2) pass visits every tracked object and holds
the event loop meanwhile: at 10,000 open connections (about a million objects) that is 0.5-1 s, every
connection and every hub frozen in place. It runs whenever the objects promoted since the last full pass
pass a quarter of the old generation, so a wave of connections, or steady traffic after one, sets it off.

With ``GC_FREEZE_CONNECTIONS`` (a number of connections), the heartbeat calls :func:`maybe_freeze`: once
that many connections have opened since the last freeze (or a tenth of that many, when the wave is over:
none opened since the previous heartbeat), it collects the youngest generation (a short pass)
and moves every surviving object to the permanent generation (``gc.freeze()``, constant time). Full passes
then visit only what came after, and stay short whatever the number of open connections.

The price: an object alive at a freeze that later becomes part of an unreachable reference cycle is never
collected. Reference counting still frees everything else. A closed connection breaks its own cycles (see
``HubConnection``) so that its objects go at once; what the server and the libraries under it keep in
cycles is measured by bench/ (scenario ``steady``: objects left per closed connection, frozen ones
included). Code of your own that makes cycles in long-lived objects would leak them the same way.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

_state = {"opened": 0, "freezes": 0, "seen": 0, "warned": 0}


def check_server(protocol: object, threshold: int | None) -> None:
    """Warn once if ``GC_FREEZE_CONNECTIONS`` is on but the server's WebSocket ``protocol`` object is not known to free
    a closed connection without the collector (only ``signalr_groups.server.uvicorn_ws``'s is: its class says so
    with ``frees_closed_connections``). With another, the objects of connections that a freeze caught and that later
    close may stay in cycles that no collection visits: a leak that grows with the connections served."""
    if threshold is None or _state["warned"] or getattr(protocol, "frees_closed_connections", False):
        return
    _state["warned"] = 1
    logger.warning(
        "signalr_groups: GC_FREEZE_CONNECTIONS is set, but WebSockets are served by %s, which may keep a closed "
        "connection's objects in reference cycles that frozen objects never leave. Run uvicorn with "
        "--ws signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol, or unset GC_FREEZE_CONNECTIONS.",
        type(protocol).__qualname__,
    )


def connection_opened() -> None:
    """Count a connection registered in this process (since the last freeze)."""
    _state["opened"] += 1


def maybe_freeze(threshold: int | None) -> bool:
    """Freeze the surviving objects if ``threshold`` connections opened since the last freeze, or a tenth of
    that many and none since the previous heartbeat (the end of a wave); True if it did."""
    opened, seen = _state["opened"], _state["seen"]
    _state["seen"] = opened
    if threshold is None or opened < threshold and not (opened >= max(1, threshold // 10) and opened == seen):
        return False
    _state["opened"] = _state["seen"] = 0
    gc.collect(0)  # the youngest generation's garbage is not frozen with the rest (a pass over gen 1 may be long)
    gc.freeze()
    _state["freezes"] += 1
    # (not gc.get_freeze_count(): it walks every frozen object, a long pause at 10,000 connections)
    logger.debug("signalr_groups: gc.freeze() #%d", _state["freezes"])
    return True
