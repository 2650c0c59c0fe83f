"""A loopback TCP proxy for partition tests: forwards to a target, or drops everything while partitioned."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class PartitionProxy:
    """Listens on a free loopback port and forwards to ``target_port``; :meth:`partition` blackholes traffic.

    While partitioned, connections stay open but every byte in either direction is dropped (as a
    network partition does: no reset, no answer), and new connections are accepted and hang.
    :meth:`heal` forwards again. Runs its own event loop in a thread; :meth:`stop` ends it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.partitioned = False
        #: Seconds a new connection waits before it is forwarded (a reconnect that comes late).
        self.delay_new = 0.0
        #: New connections accepted so far.
        self.accepted = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the proxy did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        started.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.partitioned:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.delay_new:
            await asyncio.sleep(self.delay_new)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
        )
        self._writers -= {client_writer, server_writer}

    def partition(self) -> None:
        """Drop all traffic from now on (connections stay open)."""
        self.partitioned = True

    def cut(self) -> None:
        """Drop every open connection now, both ways (as a network that fails; no WebSocket close frame).

        New connections are forwarded as before.
        """

        async def drop() -> None:
            for writer in list(self._writers):
                transport = writer.transport
                if transport is not None:
                    transport.abort()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(5)

    def heal(self) -> None:
        """Forward traffic again."""
        self.partitioned = False

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread."""

        async def shutdown() -> Any:
            for writer in list(self._writers):
                writer.close()
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
