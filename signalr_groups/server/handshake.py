"""Reading the handshake request of a new connection (the answer is sent once it is registered).

The handshake is JSON text ending in 0x1E whatever protocol it asks for; what follows it in the
same frame or body is already the chosen protocol's data (binary for MessagePack), so the
handshake is found in the raw bytes and the rest handed to the protocol's reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from signalr_groups.exceptions import HandshakeError, ProtocolError
from signalr_groups.protocol.handshake import parse_handshake, transfer_format_error, write_handshake_error
from signalr_groups.protocol.hub_protocols import HubProtocol, MessageReader, protocol_named

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]

_SEPARATOR = 0x1E


@dataclass(slots=True)
class Handshake:
    """A successful handshake: the protocol, its reader, and the records that followed in the same data."""

    protocol: HubProtocol
    reader: MessageReader
    records: list[Any]
    error: ProtocolError | None
    #: The protocol version the client asked for (2 enables stateful reconnect, if negotiated).
    version: int = 1


def frame_bytes(message: dict[str, Any]) -> bytes:
    """The payload of a ``websocket.receive`` message as bytes (text frames as UTF-8)."""
    text = message.get("text")
    if text is not None:
        return str(text).encode("utf-8", "surrogatepass")
    data = message.get("bytes")
    return bytes(data) if data else b""


async def _answer_error_and_close(send: ASGISend, text: str) -> None:
    await send({"type": "websocket.send", "text": text})
    await send({"type": "websocket.close", "code": 1000})


def _accept(
    record: bytes, protocols: Iterable[str], binary_transport: bool, max_message_size: int
) -> tuple[HubProtocol, MessageReader, int]:
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HandshakeError("Handshake was canceled.") from exc
    request = parse_handshake(text, tuple(protocols))
    protocol = protocol_named(request.protocol)
    if protocol is None:  # pragma: no cover - parse_handshake only accepts names we have
        raise HandshakeError(f"The protocol '{request.protocol}' is not supported.")
    if protocol.binary and not binary_transport:
        raise HandshakeError(transfer_format_error(protocol.name, protocol.transfer_format))
    return protocol, protocol.reader(max_message_size), request.version


async def read_handshake(
    receive: ASGIReceive,
    send: ASGISend,
    *,
    max_message_size: int,
    timeout: float,
    protocols: Iterable[str] = ("json",),
    binary_transport: bool = True,
) -> Handshake | None:
    """Read and check the handshake within ``timeout`` seconds.

    Returns the chosen protocol with the records that followed the handshake in the same data
    (and a protocol error among them, if any), or None when the connection is over: the client
    left, sent no handshake in time (closed), or sent a bad one (answered with the spec's error,
    then closed).
    """
    deadline = time.monotonic() + timeout
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            logger.info("signalr_groups: no handshake within %gs; closing", timeout)
            await send({"type": "websocket.close", "code": 1000})
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = frame_bytes(message)
        end = data.find(_SEPARATOR)
        if end < 0:
            buffer += data
            if len(buffer) > max_message_size:
                await _answer_error_and_close(send, write_handshake_error("Handshake was canceled."))
                return None
            continue
        record = bytes(buffer) + data[:end]
        if len(record) > max_message_size:
            await _answer_error_and_close(send, write_handshake_error("Handshake was canceled."))
            return None
        try:
            protocol, reader, version = _accept(record, protocols, binary_transport, max_message_size)
        except HandshakeError as exc:
            await _answer_error_and_close(send, write_handshake_error(str(exc)))
            return None
        rest = data[end + 1 :]
        records, error = reader.feed(rest) if rest else ([], None)
        return Handshake(protocol, reader, records, error, version)
