"""Reading the handshake request of a new connection (the answer is sent once it is registered)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from signalr_groups.exceptions import HandshakeError, ProtocolError
from signalr_groups.protocol.handshake import parse_handshake, write_handshake_error
from signalr_groups.protocol.json import RecordReader

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]


def frame_text(message: dict[str, Any]) -> str | None:
    """The text of a ``websocket.receive`` message; None for a binary frame that is not UTF-8."""
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    if data is None:
        return ""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


async def _answer_error_and_close(send: ASGISend, text: str) -> None:
    await send({"type": "websocket.send", "text": text})
    await send({"type": "websocket.close", "code": 1000})


async def read_handshake(
    receive: ASGIReceive, send: ASGISend, reader: RecordReader, timeout: float
) -> tuple[list[str], ProtocolError | None] | None:
    """Read and check the handshake within ``timeout`` seconds.

    Returns the records that followed it in the same frames (and a protocol error among them,
    if any), or None when the connection is over: the client left, sent no handshake in time
    (closed), or sent a bad one (answered with the spec's error, then closed).
    """
    deadline = time.monotonic() + timeout
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
        text = frame_text(message)
        if text is None:
            await _answer_error_and_close(send, write_handshake_error("Handshake was canceled."))
            return None
        records, error = reader.feed(text)
        if records:
            try:
                parse_handshake(records[0])
            except HandshakeError as exc:
                await _answer_error_and_close(send, write_handshake_error(str(exc)))
                return None
            return records[1:], error
        if error is not None:
            await _answer_error_and_close(send, write_handshake_error("Handshake was canceled."))
            return None
