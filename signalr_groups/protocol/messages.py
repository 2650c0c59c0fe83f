"""Hub protocol messages (HubProtocol.md), as frozen dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class MessageType(enum.IntEnum):
    """The numeric ``type`` of a hub message."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


@dataclass(frozen=True, slots=True)
class InvocationMessage:
    """Type 1: call ``target`` with ``arguments``; no ``invocation_id`` means no reply is wanted."""

    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamInvocationMessage:
    """Type 4: call a streaming method."""

    invocation_id: str
    target: str
    arguments: list[Any]
    stream_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamItemMessage:
    """Type 2: one item of a stream."""

    invocation_id: str
    item: Any


@dataclass(frozen=True, slots=True)
class CompletionMessage:
    """Type 3: the end of an invocation, with a result, an error, or neither."""

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False


@dataclass(frozen=True, slots=True)
class CancelInvocationMessage:
    """Type 5: the caller no longer wants a stream."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class PingMessage:
    """Type 6: keep-alive."""


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """Type 7: the sender is closing; ``allow_reconnect`` tells the client whether to retry."""

    error: str | None = None
    allow_reconnect: bool | None = None


@dataclass(frozen=True, slots=True)
class AckMessage:
    """Type 8: stateful reconnect: every message up to ``sequence_id`` arrived (the sender may forget them)."""

    sequence_id: int


@dataclass(frozen=True, slots=True)
class SequenceMessage:
    """Type 9: stateful reconnect: ``sequence_id`` is the id of the next message the sender sends (after a reconnect)."""

    sequence_id: int


HubMessage = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)
