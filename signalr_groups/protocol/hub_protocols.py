"""The hub protocols a connection can speak, behind one interface (ASP.NET Core's ``IHubProtocol``).

A :class:`HubProtocol` reads a connection's incoming data into records and records into
messages, and writes the records the server sends to one connection (completions, pings,
Close). Invocations sent to many connections are written once per protocol by
:class:`~signalr_groups.protocol.serialized.SerializedInvocation`.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from signalr_groups.exceptions import ProtocolError
from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol import messagepack
from signalr_groups.protocol.messages import HubMessage
from signalr_groups.protocol.serialized import SerializedInvocation

Frame = str | bytes


class MessageReader(Protocol):
    """Splits a connection's incoming data into records, across and within frames."""

    def feed(self, data: str | bytes) -> tuple[list[Any], ProtocolError | None]:
        """Add data; return the complete records, and an error if the data broke the protocol."""


class _JsonReader:
    __slots__ = ("_records",)

    def __init__(self, max_message_size: int) -> None:
        self._records = json_protocol.RecordReader(max_message_size)

    def feed(self, data: str | bytes) -> tuple[list[Any], ProtocolError | None]:
        if not isinstance(data, str):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                return [], ProtocolError("A binary frame is not valid UTF-8.")
        records, error = self._records.feed(data)
        return list(records), error


class _MessagePackReader:
    __slots__ = ("_reader",)

    def __init__(self, max_message_size: int) -> None:
        self._reader = messagepack.MessagePackReader(max_message_size)

    def feed(self, data: str | bytes) -> tuple[list[Any], ProtocolError | None]:
        records, error = self._reader.feed(data.encode("utf-8") if isinstance(data, str) else bytes(data))
        return list(records), error


class HubProtocol:
    """One hub protocol: its name, transfer format, reader, parser and writers."""

    #: The name a client asks for in the handshake (lower case).
    name: str = ""
    #: Whether its frames are binary (the transport must support the Binary transfer format).
    binary: bool = False
    #: A Ping record.
    ping: Frame = ""

    @property
    def transfer_format(self) -> str:
        """``"Binary"`` or ``"Text"``, as negotiate spells transfer formats."""
        return "Binary" if self.binary else "Text"

    def reader(self, max_message_size: int) -> MessageReader:
        """A reader for one connection's incoming data."""
        raise NotImplementedError

    def parse(self, record: Any) -> HubMessage | None:
        """Parse one record; None for a message type this server ignores; :class:`ProtocolError` if malformed."""
        raise NotImplementedError

    def invocation(self, message: SerializedInvocation) -> Frame:
        """The record of a (shared) invocation in this protocol (empty if it cannot be written in it)."""
        raise NotImplementedError

    def completion(
        self, invocation_id: str, *, result: Any = None, error: str | None = None, has_result: bool = False
    ) -> Frame:
        """A Completion record."""
        raise NotImplementedError

    def close(self, error: str | None = None, allow_reconnect: bool | None = None) -> Frame:
        """A Close record."""
        raise NotImplementedError

    def stream_item(self, invocation_id: str, item: Any) -> Frame:
        """A StreamItem record (raises :class:`~signalr_groups.exceptions.PayloadError` for an item it cannot carry)."""
        raise NotImplementedError

    def client_invocation(self, invocation_id: str, target: str, arguments: list[Any]) -> Frame:
        """An Invocation that asks the client for a result."""
        raise NotImplementedError

    def ack(self, sequence_id: int) -> Frame:
        """An Ack record (stateful reconnect)."""
        raise NotImplementedError

    def sequence(self, sequence_id: int) -> Frame:
        """A Sequence record (stateful reconnect)."""
        raise NotImplementedError


class JsonHubProtocol(HubProtocol):
    """The JSON hub protocol: text records ending in 0x1E."""

    name = "json"
    binary = False
    ping = json_protocol.PING_RECORD

    def reader(self, max_message_size: int) -> MessageReader:
        """A 0x1E record splitter (binary frames are read as UTF-8)."""
        return _JsonReader(max_message_size)

    def parse(self, record: Any) -> HubMessage | None:
        """Parse one JSON record."""
        return json_protocol.parse_message(record)

    def invocation(self, message: SerializedInvocation) -> Frame:
        """The JSON form, written when the invocation was sent."""
        return message.json

    def completion(
        self, invocation_id: str, *, result: Any = None, error: str | None = None, has_result: bool = False
    ) -> Frame:
        """A JSON Completion record."""
        return json_protocol.write_completion(invocation_id, result=result, error=error, has_result=has_result)

    def close(self, error: str | None = None, allow_reconnect: bool | None = None) -> Frame:
        """A JSON Close record."""
        return json_protocol.write_close(error, allow_reconnect)

    def stream_item(self, invocation_id: str, item: Any) -> Frame:
        """A JSON StreamItem record."""
        return json_protocol.write_stream_item(invocation_id, item)

    def client_invocation(self, invocation_id: str, target: str, arguments: list[Any]) -> Frame:
        """A JSON Invocation with an id."""
        return json_protocol.write_invocation(target, arguments, invocation_id)

    def ack(self, sequence_id: int) -> Frame:
        """A JSON Ack record."""
        return json_protocol.write_ack(sequence_id)

    def sequence(self, sequence_id: int) -> Frame:
        """A JSON Sequence record."""
        return json_protocol.write_sequence(sequence_id)


class MessagePackHubProtocol(HubProtocol):
    """The MessagePack hub protocol: binary messages behind a VarInt length prefix."""

    name = "messagepack"
    binary = True
    ping = messagepack.PING_FRAME

    def reader(self, max_message_size: int) -> MessageReader:
        """A length-prefix splitter (text frames are read as their UTF-8 bytes, as .NET does)."""
        return _MessagePackReader(max_message_size)

    def parse(self, record: Any) -> HubMessage | None:
        """Parse one MessagePack message body."""
        return messagepack.parse_message(record)

    def invocation(self, message: SerializedInvocation) -> Frame:
        """The MessagePack form, written on first use."""
        return message.msgpack

    def completion(
        self, invocation_id: str, *, result: Any = None, error: str | None = None, has_result: bool = False
    ) -> Frame:
        """A MessagePack Completion message."""
        return messagepack.write_completion(invocation_id, result=result, error=error, has_result=has_result)

    def close(self, error: str | None = None, allow_reconnect: bool | None = None) -> Frame:
        """A MessagePack Close message."""
        return messagepack.write_close(error, allow_reconnect)

    def stream_item(self, invocation_id: str, item: Any) -> Frame:
        """A MessagePack StreamItem message."""
        return messagepack.write_stream_item(invocation_id, item)

    def client_invocation(self, invocation_id: str, target: str, arguments: list[Any]) -> Frame:
        """A MessagePack Invocation with an id."""
        return messagepack.write_invocation(target, arguments, invocation_id)

    def ack(self, sequence_id: int) -> Frame:
        """A MessagePack Ack message."""
        return messagepack.write_ack(sequence_id)

    def sequence(self, sequence_id: int) -> Frame:
        """A MessagePack Sequence message."""
        return messagepack.write_sequence(sequence_id)


JSON: Final = JsonHubProtocol()
MESSAGEPACK: Final = MessagePackHubProtocol()
_BY_NAME: Final[dict[str, HubProtocol]] = {JSON.name: JSON, MESSAGEPACK.name: MESSAGEPACK}


def protocol_named(name: str) -> HubProtocol | None:
    """The protocol a handshake names (case-insensitively), or None if this server has none of that name."""
    return _BY_NAME.get(name.lower())
