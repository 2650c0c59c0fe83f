"""Flow control is chosen by the server under the app: daphne's internals are there, others need none."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from signalr_groups.server.flow import DaphneFlowControl, FlowControl, flow_control_for, missing_daphne_internals


class FakeTransport:
    """A Twisted TCP transport as the flow control uses it: a producer slot, reading on or off."""

    producer: object = None
    reading = True

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


def _state(transport: Any) -> tuple[object, bool]:
    return transport.producer, transport.reading


def test_the_installed_daphne_has_what_flow_control_reads():
    assert missing_daphne_internals() == []


async def test_servers_that_apply_backpressure_themselves_get_none():
    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    flow = flow_control_for(receive, send)
    assert type(flow) is FlowControl and not flow.controls_writes and not flow.lingers
    await flow.writable()  # never waits


async def test_daphne_is_recognised_under_channels_session_middleware():
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.transport = FakeTransport()
    server = Server.__new__(Server)
    queue: asyncio.Queue[Any] = asyncio.Queue()

    class SessionWrapper:  # as channels.sessions.InstanceSessionWrapper keeps the server's send
        def __init__(self, real_send: Any) -> None:
            self.real_send = real_send

        async def send(self, message: dict[str, Any]) -> None:
            await self.real_send(message)

    send = SessionWrapper(functools.partial(server.handle_reply, protocol)).send
    flow = flow_control_for(queue.get, send)
    assert isinstance(flow, DaphneFlowControl) and flow.controls_writes and flow.lingers
    transport: Any = protocol.transport
    assert transport.producer is flow  # Twisted now tells us when its write buffer fills
    for index in range(9):
        queue.put_nowait({"type": "websocket.receive", "text": str(index)})
    flow.after_receive()
    assert not transport.reading  # the queue is long: stop reading the socket
    while queue.qsize() > 2:
        queue.get_nowait()
    flow.before_receive()
    assert transport.reading
    flow.pause_reading()
    assert not transport.reading
    flow.resume_reading()
    assert transport.reading
    flow.pauseProducing()  # Twisted: the write buffer is full
    waiting = asyncio.ensure_future(flow.writable())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    flow.resumeProducing()
    await asyncio.wait_for(waiting, 1)
    flow.close()
    assert _state(transport) == (None, True)  # unregistered, and reading again


async def test_the_linger_reads_again_to_see_the_clients_close():
    """A connection closing while reading is paused (a long queue, say) must still see the client's close."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.transport = FakeTransport()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    flow = flow_control_for(queue.get, functools.partial(Server.__new__(Server).handle_reply, protocol))
    flow.pause_reading("closing")
    transport: Any = protocol.transport
    assert not transport.reading

    async def client_closes() -> None:
        await asyncio.sleep(0.05)
        assert transport.reading  # the linger resumed reading before waiting
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})

    closing = asyncio.ensure_future(client_closes())
    assert await flow.linger(queue.get) is True
    await closing
    flow.close()


def test_per_address_keys():
    from signalr_groups.rate_limits import address_key

    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("not an address") == "not an address"
