"""A leaner uvicorn WebSocket protocol: uvicorn's ``websockets-sansio`` one, with less kept per open connection.

    uvicorn hubproject.asgi:application --ws signalr_groups.server.uvicorn_ws:SignalRWebSocketProtocol ...

It subclasses uvicorn's ``WebSocketsSansIOProtocol`` and changes only what an idle connection keeps, never
what goes over the wire or what the app sees:

* ``__slots__`` for all of uvicorn's attributes (37 of them overflow CPython's shared-key instance dict: ~1.4 KB);
* once open, no handshake ``Request`` (headers, path) or ``Response`` (uvicorn keeps both; so does the parser
  generator of ``websockets``, replaced by its frame parser alone, see :func:`_drop_handshake_parser`);
* the receive queue is :class:`_Inbox` (a deque only while messages wait, a future only while the app waits), not
  an ``asyncio.Queue`` (three deques, an ``Event``); ``writable`` is :class:`_Writable`, an ``asyncio.Event``
  whose waiter list exists only while a ``send()`` waits;
* header pairs and addresses that other connections have too are shared (immutable tuples, :func:`_shared`).

It relies on uvicorn's internals, so it is pinned: importing it with another uvicorn raises ImportError naming
:data:`SUPPORTED_UVICORN`; :func:`check_uvicorn` also checks that uvicorn's class still has what is overridden.
"""

from __future__ import annotations

import asyncio
import re
import sys
from asyncio.transports import BaseTransport
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any, Final, TypeVar, cast

#: The uvicorn releases whose ``websockets_sansio_impl.py`` this module was checked against (byte-identical in
#: 0.52.4, 0.53.0 and 0.54.0): ``low <= version < high``.
SUPPORTED_UVICORN: Final = ((0, 52, 4), (0, 55))
_T = TypeVar("_T")
_RANGE: Final = "uvicorn >=0.52.4,<0.55 (its websockets-sansio protocol)"

try:
    import uvicorn
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.http11 import Request
    from websockets.protocol import OPEN, Protocol
    from websockets.server import ServerProtocol
    from websockets.streams import StreamReader
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(f"signalr_groups.server.uvicorn_ws needs {_RANGE}: {exc}") from exc

_HttpToolsProtocol: type[Any] | None
try:  # uvicorn's default HTTP protocol when httptools is installed (uvicorn[standard]); h11's keeps no cycle
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on what is installed
    _HttpToolsProtocol = None

#: What this module overrides or replaces, by uvicorn method: the names each must still use.
_EXPECTED: Final = {
    "__init__": ("queue", "writable", "conn", "frames"),
    "handle_connect": ("request", "response", "scope", "queue"),
    "send": ("writable", "response", "start_keepalive", "queue"),
    "receive": ("queue", "read_paused", "transport"),
    "send_receive_event_to_app": ("queue", "read_paused", "transport"),
    "start_keepalive": ("ping_interval", "schedule_ping"),
    "connection_lost": ("writable", "queue"),
    "connection_made": ("server", "client"),
    "pause_writing": ("writable",),
    "resume_writing": ("writable",),
}


def _version(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def check_uvicorn(version: str | None = None, parent: type = WebSocketsSansIOProtocol) -> None:
    """Raise ImportError unless ``version`` (default: the installed uvicorn's) and ``parent`` are supported."""
    found = _version(version or uvicorn.__version__)
    low, high = SUPPORTED_UVICORN
    if not low <= found < high:
        raise ImportError(
            f"signalr_groups.server.uvicorn_ws supports {_RANGE}, not uvicorn {version or uvicorn.__version__}"
        )
    missing = []
    for method, names in _EXPECTED.items():
        code = getattr(getattr(parent, method, None), "__code__", None)
        absent = [name for name in names if code is None or name not in code.co_names]
        if absent:
            missing.append(f"{parent.__name__}.{method} no longer uses {', '.join(absent)}")
    if missing:
        raise ImportError(f"signalr_groups.server.uvicorn_ws: this uvicorn's protocol changed ({'; '.join(missing)})")


check_uvicorn()


class _Ready:
    """What ``_Writable.wait()`` returns while writable: awaiting it returns at once, with no coroutine made."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return cast("Generator[None, None, None]", iter(()))


_READY: Final = _Ready()


class _Writable:
    """``asyncio.Event`` as uvicorn uses it (set, clear, is_set, wait), with a waiter list only while one waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """True while the transport takes writes."""
        return self._value

    def set(self) -> None:
        """Writable again: wake every waiting ``wait()``."""
        if not self._value:
            self._value = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        """Not writable (the transport's buffer is over its high-water mark)."""
        self._value = False

    def wait(self) -> Awaitable[None]:
        """Return once writable."""
        return _READY if self._value else self._wait()

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None


class _Inbox:
    """uvicorn's receive queue: ``put_nowait`` and ``empty`` as on ``asyncio.Queue``, and what ``receive()`` needs to
    wait as ``Queue.get`` does; its deque exists only while messages wait, its getter future only while one waits."""

    __slots__ = ("_items", "_getter", "_more_getters")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getter: asyncio.Future[None] | None = None
        self._more_getters: deque[asyncio.Future[None]] | None = None  # concurrent receive() calls (rare)

    def empty(self) -> bool:
        """No message waits."""
        return not self._items

    def put_nowait(self, message: Any) -> None:
        """Queue ``message`` and wake the first waiting getter."""
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(message)
        self._wake_next()

    def popleft(self) -> Any:
        """The first message (there must be one)."""
        items = self._items
        assert items
        message = items.popleft()
        if not items:
            self._items = None
        return message

    def getter(self) -> asyncio.Future[None]:
        """A future that ``put_nowait`` completes, first come first served."""
        getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._getter is None:
            self._getter = getter
        else:
            self._more_getters = self._more_getters or deque()
            self._more_getters.append(getter)
        return getter

    def abandon(self, getter: asyncio.Future[None]) -> None:
        """Its waiter was cancelled (``Queue.get``'s clean-up): pass a wake-up it took on to the next getter."""
        getter.cancel()
        more = self._more_getters
        if self._getter is getter:
            self._getter = more.popleft() if more else None
        elif more is not None and getter in more:
            more.remove(getter)
        if not self._more_getters:
            self._more_getters = None
        if self._items and not getter.cancelled():
            self._wake_next()

    def _wake_next(self) -> None:
        while (getter := self._getter) is not None:
            more = self._more_getters
            self._getter = more.popleft() if more else None
            if not more:
                self._more_getters = None
            if not getter.done():
                getter.set_result(None)
                return


#: Header (name, value) pairs and listening addresses repeat from one connection to the next: one shared copy of each
#: (immutable tuples), for up to this many. Pairs of the headers below, whose values are per connection, never are.
_SHARED_MAX: Final = 1024
_SHARED: dict[Any, Any] = {}
_PER_CONNECTION: Final = frozenset(
    (b"sec-websocket-key", b"cookie", b"authorization", b"x-forwarded-for", b"forwarded", b"x-real-ip",
     b"x-request-id", b"traceparent", b"tracestate", b"baggage", b"sentry-trace", b"x-amzn-trace-id", b"cf-ray")
)  # fmt: skip


def _shared(value: _T) -> _T:
    shared = _SHARED.get(value)
    if shared is not None:
        return cast(_T, shared)
    if len(_SHARED) < _SHARED_MAX:
        _SHARED[value] = value
    return value


_PARSERS: Final = tuple(
    getattr(parse, "__code__", None) for parse in (ServerProtocol.parse, Protocol.parse, StreamReader.at_eof)
)


def _drop_handshake_parser(conn: ServerProtocol) -> None:
    """Replace ``conn``'s parser, ``ServerProtocol.parse`` delegating to ``Protocol.parse`` for the connection's life
    (its frame holds the handshake request), with a new ``Protocol.parse``: only if the old one waits for the next
    frame with nothing buffered (so nothing is half-parsed). Otherwise (say a client that sent frames before the
    101), nothing changes."""
    old = conn.parser
    inner = getattr(old, "gi_yieldfrom", None)
    waiting = getattr(inner, "gi_yieldfrom", None)
    codes = (getattr(old, "gi_code", None), getattr(inner, "gi_code", None), getattr(waiting, "gi_code", None))
    if codes != _PARSERS or None in codes or conn.state is not OPEN or conn.reader.buffer or conn.reader.eof:
        return
    fresh = Protocol.parse(conn)
    next(fresh)  # runs to its first wait for data (the buffer is empty), as Protocol.__init__ does
    conn.parser = fresh
    old.close()  # GeneratorExit through both frames, at their wait: no state changes


def _release_upgrade_protocol(http: Any) -> None:
    """Break the cycle of the HTTP protocol object that served a WebSocket upgrade (its ``httptools`` parser holds its
    bound callbacks), as its own ``connection_lost`` does for a plain HTTP connection: the upgraded connection's
    transport now calls the WebSocket protocol, so the HTTP one is done. Freed by reference counting then, rather
    than by a collection: with ``GC_FREEZE_CONNECTIONS``, one that a freeze caught mid-handshake would otherwise never
    be freed, and would keep its transport (the socket's) with it."""
    if http.transport is not None and http.transport.get_protocol() is not http:
        http.parser = http.flow = http.transport = None


class SignalRWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, keeping ~11 KB less per open connection (see the module)."""

    # Every attribute uvicorn's __init__, handle_connect and send() set: stored in slots, the instance dict stays
    # empty. An attribute a later uvicorn adds still works (it goes to the dict).
    __slots__ = (
        "config", "app", "loop", "logger", "root_path", "asgi_version", "app_state", "connections", "tasks",
        "default_headers", "transport", "server", "client", "scheme", "queue", "handshake_initiated",
        "handshake_complete", "close_sent", "disconnected", "close_timer", "close_timeout", "initial_response",
        "conn", "read_paused", "writable", "ping_interval", "ping_timeout", "ping_timer", "pong_timer",
        "pending_ping_payload", "ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type", "request",
        "response", "scope",
    )  # fmt: skip

    #: A closed connection's objects go by reference counting, none left in cycles (see ``GC_FREEZE_CONNECTIONS``).
    frees_closed_connections: Final = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # (config, server_state, app_state, _loop=None)
        super().__init__(*args, **kwargs)
        self.queue = cast("asyncio.Queue[Any]", _Inbox())
        self.writable = cast("asyncio.Event", _Writable())

    def connection_made(self, transport: BaseTransport) -> None:
        """uvicorn's, with the listening address and the peer's host shared with the other connections; and the HTTP
        protocol that served the upgrade request let go of its parser once the upgrade is done (see
        :func:`_release_upgrade_protocol`)."""
        upgraded_from = getattr(transport, "get_protocol", lambda: None)()
        if _HttpToolsProtocol is not None and isinstance(upgraded_from, _HttpToolsProtocol):
            self.loop.call_soon(_release_upgrade_protocol, upgraded_from)
        super().connection_made(transport)
        self.server = _shared(self.server) if self.server is not None else None
        if self.client is not None:
            self.client = (sys.intern(self.client[0]), self.client[1])

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, then close the ``websockets`` parser: its generator and the protocol object refer to each other,
        a cycle that only a full collection frees (and none, once frozen by ``GC_FREEZE_CONNECTIONS``)."""
        super().connection_lost(exc)
        parser = getattr(self.conn, "parser", None)
        if parser is not None and hasattr(parser, "close"):
            parser.close()  # GeneratorExit at its wait for data: the TCP connection is gone, nothing is parsed

    def handle_connect(self, event: Request) -> None:
        """uvicorn's, then forget the request (the ``websockets`` parser keeps ``event`` while the connection lasts),
        and share the scope's header pairs that other connections have too."""
        super().handle_connect(event)
        self.request = None  # type: ignore[assignment]
        event.headers.clear()
        event.path = ""
        scope = getattr(self, "scope", None)  # None if websockets refused the upgrade
        if scope is not None:
            scope["headers"] = [
                pair if pair[0].lower() in _PER_CONNECTION else _shared(pair) for pair in scope["headers"]
            ]

    def start_keepalive(self) -> None:
        """Called by uvicorn's ``send()`` right after it wrote the 101 response: drop what only the upgrade needed."""
        self.response = None  # type: ignore[assignment]
        _drop_handshake_parser(self.conn)
        super().start_keepalive()

    async def receive(self) -> Any:
        """The app's next message: uvicorn's ``receive()`` with ``Queue.get`` inlined (one coroutine fewer)."""
        inbox = cast(_Inbox, self.queue)
        while inbox.empty():
            getter = inbox.getter()
            try:
                await getter
            except BaseException:
                inbox.abandon(getter)
                raise
        message = inbox.popleft()
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message
