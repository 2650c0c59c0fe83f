"""An in-process SignalR JSON-protocol client over channels' ``WebsocketCommunicator``."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from signalr_groups.hubs.hub import Hub
from signalr_groups.server.endpoint import HubConsumer
from tests.hubs import InteropHub

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
#: Seconds to wait for something that must arrive.
TIMEOUT = 2.0
#: Seconds of silence that prove nothing was sent.
QUIET = 0.2


class FakeUser:
    """An authenticated user for the scope (no database): ``username_user_id`` reads ``get_username()``."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, username: str) -> None:
        self.username = username
        self.pk = username

    def get_username(self) -> str:
        return self.username


class HubClient:
    """A raw SignalR client: sends text frames, splits what comes back into parsed records."""

    def __init__(self, hub: type[Hub] = InteropHub, path: str = "/interop", user: Any = None) -> None:
        self.communicator = WebsocketCommunicator(HubConsumer.as_asgi(hub), path)
        self.communicator.scope["client"] = ("127.0.0.1", 40000)  # as a server gives it
        if user is not None:
            self.communicator.scope["user"] = user
        self._pending: list[str] = []
        self._next_id = 0

    async def open(self) -> None:
        """Open the WebSocket without sending the handshake."""
        connected, _ = await self.communicator.connect(timeout=TIMEOUT)
        assert connected

    async def connect(self) -> None:
        """Open the WebSocket and complete the JSON handshake."""
        await self.open()
        await self.send_text(HANDSHAKE)
        assert await self.receive_raw_record() == "{}"

    async def send_text(self, text: str) -> None:
        """Send one text frame, exactly as given."""
        await self.communicator.send_input({"type": "websocket.receive", "text": text})

    async def send_record(self, message: dict[str, Any]) -> None:
        """Send one JSON record (with its separator) as one frame."""
        await self.send_text(json.dumps(message) + RS)

    async def receive_raw_record(self, timeout: float = TIMEOUT) -> str:
        """The next server record, without its separator, however the server batched its frames."""
        while not self._pending:
            output = await self.communicator.receive_output(timeout)
            assert output["type"] == "websocket.send", f"expected a text frame, got {output!r}"
            text = output["text"]
            assert text.endswith(RS), f"a frame must end with a record separator: {text!r}"
            self._pending.extend(text.split(RS)[:-1])
        return self._pending.pop(0)

    async def receive_records(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """The next ``count`` server records, parsed."""
        return [json.loads(await self.receive_raw_record(timeout)) for _ in range(count)]

    async def receive_record(self, timeout: float = TIMEOUT) -> Any:
        """The next server record, parsed."""
        (record,) = await self.receive_records(1, timeout)
        return record

    async def invoke_record(self, target: str, *arguments: Any) -> Any:
        """Invoke a hub method and return its Completion record."""
        self._next_id += 1
        invocation_id = f"i{self._next_id}"
        await self.send_record(
            {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(arguments)}
        )
        completion = await self.receive_record()
        assert completion["type"] == 3 and completion["invocationId"] == invocation_id, completion
        return completion

    async def invoke(self, target: str, *arguments: Any) -> Any:
        """Invoke a hub method that must succeed; return its result."""
        completion = await self.invoke_record(target, *arguments)
        assert "error" not in completion, completion
        return completion.get("result")

    async def send(self, target: str, *arguments: Any) -> None:
        """A non-blocking invocation (no invocationId, no reply)."""
        await self.send_record({"type": 1, "target": target, "arguments": list(arguments)})

    async def assert_echo(self, value: Any = "still alive") -> None:
        """Prove the connection still works: Echo answers."""
        assert await self.invoke("Echo", value) == value

    async def assert_nothing(self, timeout: float = QUIET) -> None:
        """Nothing arrives within ``timeout`` seconds."""
        assert not self._pending, self._pending
        assert await self.communicator.receive_nothing(timeout=timeout)

    async def assert_closed(self, error: str | None = None) -> None:
        """Expect ``{"type":7,"error":error,"allowReconnect":true}`` then a WebSocket close 1000."""
        if error is not None:
            assert await self.receive_record() == {"type": 7, "error": error, "allowReconnect": True}
        assert not self._pending, self._pending
        assert await self.communicator.receive_output(TIMEOUT) == {"type": "websocket.close", "code": 1000}
        await self.communicator.wait(TIMEOUT)

    async def disconnect(self) -> None:
        """Close the socket from the client side and wait for the application to finish."""
        await self.communicator.disconnect(timeout=TIMEOUT)
