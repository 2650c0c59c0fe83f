"""A graceful drain on SIGTERM, under daphne and under uvicorn (reliability checklist row 39).

On the first connection a process serves, a SIGTERM handler is chained in front of the
server's own. On SIGTERM the process:

1. stops taking new connections (negotiate and new sockets get 503; readiness reports it);
2. sends every connection a Close with ``allowReconnect: true`` and no error, so the official
   clients reconnect (to another process, through the load balancer) without an error for the
   app; each connection runs ``on_disconnected`` and leaves its groups; a connection held for a
   stateful reconnect ends too;
3. once its connections are gone (at most ``SHUTDOWN_DRAIN_TIMEOUT`` seconds), its lifetime
   managers stop: they leave their layer groups and mark the process dead in Redis at once;
4. hands the signal to the server's handler, which shuts the server down as it always does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.managers import running_managers
from signalr_groups.server.state import ConnectionState

logger = logging.getLogger(__name__)

_state: dict[str, Any] = {"installed": False, "draining": False, "task": None}


def draining() -> bool:
    """Whether this process is draining for a shutdown (new connections are refused)."""
    return bool(_state["draining"])


def install() -> None:
    """Chain the SIGTERM drain in front of the server's handler (once per process; from the main thread only)."""
    if _state["installed"]:
        return
    _state["installed"] = True
    if threading.current_thread() is not threading.main_thread():
        logger.info("signalr_groups: not in the main thread; no graceful drain on SIGTERM")
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        if _state["draining"]:
            _hand_over(previous, signum, frame)  # a second SIGTERM: stop now
            return
        _state["draining"] = True
        loop.call_soon_threadsafe(_start, loop, previous, signum, frame)

    signal.signal(signal.SIGTERM, handler)


def _start(loop: asyncio.AbstractEventLoop, previous: Any, signum: int, frame: Any) -> None:
    _state["task"] = loop.create_task(_drain_then_hand_over(previous, signum, frame))


async def _drain_then_hand_over(previous: Any, signum: int, frame: Any) -> None:
    try:
        await drain()
    except Exception:
        logger.exception("signalr_groups: draining for shutdown failed")
    finally:
        _hand_over(previous, signum, frame)


def _hand_over(previous: Any, signum: int, frame: Any) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def _torn_down(connection: Any) -> bool:
    """Whether a connection's teardown ran to its end (its socket closed, its metrics counted)."""
    return getattr(connection, "state", ConnectionState.CLOSED) is ConnectionState.CLOSED


async def drain() -> int:
    """Close every connection of this process with ``allowReconnect: true`` and wait for them to end.

    Returns how many connections were closed. Bounded by ``SHUTDOWN_DRAIN_TIMEOUT``.
    """
    _state["draining"] = True
    started = time.monotonic()
    managers = running_managers()
    connections = [connection for manager in managers for connection in list(manager.connections.values())]
    for connection in connections:
        connection.abort(None, True)
    closed = len(connections)
    logger.warning("signalr_groups: shutting down: asked %d connection(s) to reconnect elsewhere", closed)
    step = 0.05
    for _ in range(int(get_hub_settings().shutdown_drain_timeout / step) + 1):
        # Torn down, not only unregistered: the Close written, the socket closed, the metrics counted.
        if all(_torn_down(connection) for connection in connections) and not any(
            manager.running for manager in managers
        ):
            break
        await asyncio.sleep(step)
    left = sum(not _torn_down(connection) for connection in connections)
    if left:
        logger.warning("signalr_groups: %d connection(s) still open after the drain timeout", left)
    logger.warning("signalr_groups: drained in %.2f s", time.monotonic() - started)
    return closed
