"""The MessagePack hub protocol: VarInt-length-prefixed binary messages, parsed defensively, written compactly.

Each message is a positional MessagePack array (``HubProtocol.md`` §MessagePack Encoding) preceded by its
length as a VarInt. Incoming bodies are first checked by :func:`_scan`, a walk over the bytes that allocates
nothing, so that the C unpacker only ever sees a complete, well-formed value no deeper than :data:`MAX_DEPTH`:
msgpack 1.1.2 preallocates a list for every array header it reads (a 5 KB body of nested ``array32`` headers
makes it allocate 40 MB before it notices the input is truncated) and only refuses nesting past 1024 levels.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

import msgpack
from django.core.serializers.json import DjangoJSONEncoder

from signalr_groups.exceptions import MessageTooLargeError, PayloadError, ProtocolError
from signalr_groups.protocol.json import MAX_INVOCATION_ID_LENGTH, RECORD_SEPARATOR, loads_strict
from signalr_groups.protocol.messagepack_scan import scan
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

#: Deepest nesting of arrays and maps accepted in a decoded message, the message's own array counting as 1
#: (so hub method arguments may nest 30 levels deep). Deeper messages are a :class:`ProtocolError`.
MAX_DEPTH: Final = 32
#: Most bytes a VarInt length prefix may take (2 GB, ``0xFF 0xFF 0xFF 0xFF 0x07``).
MAX_PREFIX_LENGTH: Final = 5
#: Largest length a prefix may declare.
MAX_DECLARED_LENGTH: Final = 2**31 - 1
#: A whole Ping frame: the length 2, then ``[6]``. Ping never carries headers.
PING_FRAME: Final[bytes] = b"\x02\x91\x06"

#: Completion result kinds.
ERROR_RESULT: Final = 1
VOID_RESULT: Final = 2
NON_VOID_RESULT: Final = 3

#: The MessagePack extension type of timestamps.

_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_django_encoder = DjangoJSONEncoder()


# --------------------------------------------------------------------------- encoding


def _default(value: Any) -> Any:
    """Turn what msgpack cannot pack natively into something it can (``default=`` hook of the packer)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        # Exact arithmetic: msgpack's Timestamp.from_datetime truncates toward zero, a second late before 1970.
        delta = value - _EPOCH
        return msgpack.Timestamp(delta.days * 86400 + delta.seconds, delta.microseconds * 1000)
    if isinstance(value, int):  # msgpack asks about the ints it cannot pack
        raise PayloadError("Cannot encode as MessagePack: an integer does not fit in 64 bits.")
    try:
        return _django_encoder.default(value)
    except TypeError as exc:
        raise PayloadError(
            f"Cannot encode as MessagePack: an object of type {type(value).__qualname__} is not serializable."
        ) from exc


def encode_value(value: Any) -> bytes:
    """Pack ``value`` as MessagePack; raises :class:`PayloadError` for what MessagePack cannot carry.

    dict, list, tuple, str, int (64 bits at most), float (NaN and infinities included), bool, None and bytes
    are packed natively. A ``datetime.datetime`` becomes a timestamp extension: an aware one is converted to
    UTC, a **naive one is taken to be UTC already**. Dates, times, durations, decimals, UUIDs and lazy strings
    become strings, as ``DjangoJSONEncoder`` writes them; anything else is refused.
    """
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]
    except PayloadError:
        raise
    except OverflowError as exc:
        raise PayloadError(f"Cannot encode as MessagePack: an integer does not fit in 64 bits ({exc}).") from exc
    except UnicodeEncodeError as exc:
        raise PayloadError(f"Cannot encode as UTF-8: {exc}") from exc
    except (TypeError, ValueError) as exc:  # unknown types, lone surrogates, self-referencing containers
        raise PayloadError(f"Cannot encode as MessagePack: {exc}") from exc


def _varint(length: int) -> bytes:
    prefix = bytearray()
    while length > 0x7F:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix)


def _frame(message: list[Any]) -> bytes:
    body = encode_value(message)
    if len(body) > MAX_DECLARED_LENGTH:
        raise PayloadError("Messages over 2GB in size are not supported.")
    return _varint(len(body)) + body


def write_invocation(target: str, arguments: list[Any] | tuple[Any, ...], invocation_id: str | None = None) -> bytes:
    """Return one Invocation frame, ``[1, {}, invocationId|nil, target, [arguments], []]`` (nil: non-blocking).

    The empty StreamIds array is what the .NET server writes; the JS client reads the first five elements
    and ignores the rest. An ``invocation_id`` asks the client for a result (a client result).
    """
    return _frame([MessageType.INVOCATION.value, {}, invocation_id, target, list(arguments), []])


def write_completion(
    invocation_id: str, *, result: Any = None, error: str | None = None, has_result: bool = False
) -> bytes:
    """Return a Completion frame: with ``error`` (kind 1), with ``result`` when ``has_result`` (kind 3), or void (kind 2)."""
    message: list[Any] = [MessageType.COMPLETION.value, {}, invocation_id]
    if error is not None:
        message += [ERROR_RESULT, error]
    elif has_result:
        message += [NON_VOID_RESULT, result]
    else:
        message.append(VOID_RESULT)
    return _frame(message)


def write_stream_item(invocation_id: str, item: Any) -> bytes:
    """Return a StreamItem frame, ``[2, {}, invocation_id, item]``."""
    return _frame([MessageType.STREAM_ITEM.value, {}, invocation_id, item])


def write_close(error: str | None = None, allow_reconnect: bool | None = None) -> bytes:
    """Return a Close frame, ``[7, error|nil]`` or ``[7, error|nil, allow_reconnect]``."""
    message: list[Any] = [MessageType.CLOSE.value, error]
    if allow_reconnect is not None:
        message.append(allow_reconnect)
    return _frame(message)


def write_ack(sequence_id: int) -> bytes:
    """Return an Ack frame, ``[8, sequence_id]``."""
    return _frame([MessageType.ACK.value, sequence_id])


def write_sequence(sequence_id: int) -> bytes:
    """Return a Sequence frame, ``[9, sequence_id]``."""
    return _frame([MessageType.SEQUENCE.value, sequence_id])


def invocation_from_json_record(record: str) -> bytes:
    """Convert a JSON Invocation record (as :func:`signalr_groups.protocol.json.write_invocation` writes it,
    separator included) into the MessagePack frame of the same invocation.

    Values keep their JSON types: a date that JSON carried as a string stays a string. Raises
    :class:`PayloadError` if ``record`` is not such a record or its values cannot be packed.
    """
    if not record.endswith(RECORD_SEPARATOR):
        raise PayloadError("Not a JSON hub record: it does not end with the record separator.")
    try:
        message = loads_strict(record[: -len(RECORD_SEPARATOR)])
    except ProtocolError as exc:
        raise PayloadError(f"Not a JSON hub record: {exc}") from exc
    if not isinstance(message, dict) or message.get("type") != MessageType.INVOCATION:
        raise PayloadError("Not a JSON Invocation record.")
    target = message.get("target")
    arguments = message.get("arguments")
    invocation_id = message.get("invocationId")
    if not isinstance(target, str) or not isinstance(arguments, list):
        raise PayloadError("Not a JSON Invocation record: 'target' or 'arguments' is missing or has the wrong type.")
    if invocation_id is not None and not isinstance(invocation_id, str):
        raise PayloadError("Not a JSON Invocation record: 'invocationId' has the wrong type.")
    return _frame([MessageType.INVOCATION.value, {}, invocation_id, target, arguments, []])


# --------------------------------------------------------------------------- framing


class MessagePackReader:
    """Splits incoming bytes into message bodies by their VarInt length prefix, across and within frames.

    A message may span several frames and a frame may hold several messages. A prefix declaring more than
    ``max_message_size`` bytes gives :class:`MessageTooLargeError` as soon as it is read, a malformed prefix
    (more than 5 bytes, over 2 GB) or a zero length a :class:`ProtocolError`; the complete messages before
    it are returned with the error and the reader is emptied. At most ``max_message_size + 4`` bytes are
    held between calls.
    """

    __slots__ = ("_buffer", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._buffer = bytearray()
        self.max_message_size = max_message_size

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished message (its prefix included) held until the rest arrives."""
        return len(self._buffer)

    def feed(self, data: bytes) -> tuple[list[bytes], ProtocolError | None]:
        """Add a frame's bytes; return the complete message bodies and an error that ends the stream, if any."""
        if self._buffer:
            self._buffer += data
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data
        end = len(buffer)
        messages: list[bytes] = []
        pos = 0
        while pos < end:
            length = 0
            index = pos
            while True:
                if index == end:  # the prefix is not complete yet
                    self._keep(buffer, pos)
                    return messages, None
                byte = buffer[index]
                length |= (byte & 0x7F) << (7 * (index - pos))
                index += 1
                if index - pos == MAX_PREFIX_LENGTH:
                    if byte > 0x07:  # a continuation bit, or bits beyond 2**31 - 1
                        return messages, self._fail(ProtocolError("Messages over 2GB in size are not supported."))
                    break
                if not byte & 0x80:
                    break
            if length == 0:
                return messages, self._fail(ProtocolError("A message of length zero was received."))
            if length > self.max_message_size:
                return messages, self._fail(
                    MessageTooLargeError(f"The maximum message size of {self.max_message_size}B was exceeded.")
                )
            if end - index < length:
                break
            messages.append(bytes(buffer[index : index + length]))
            pos = index + length
        self._keep(buffer, pos)
        return messages, None

    def _keep(self, buffer: bytes | bytearray, pos: int) -> None:
        """Hold the unfinished tail ``buffer[pos:]`` until the next call."""
        if buffer is self._buffer:
            del self._buffer[:pos]
        else:
            self._buffer = bytearray(buffer[pos:])

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._buffer = bytearray()
        return error


# --------------------------------------------------------------------------- decoding


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ProtocolError(f"Error reading MessagePack: extension type {code} is not supported.")


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ProtocolError("Error reading MessagePack: duplicate keys in a map.")
    return result


def _unpack(body: bytes) -> Any:
    """Decode one complete MessagePack value; raises :class:`ProtocolError` and nothing else."""
    scan(body, MAX_DEPTH)
    size = len(body)
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            timestamp=3,
            ext_hook=_refuse_extension,
            object_pairs_hook=_unique_keys,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except ProtocolError:
        raise
    except RecursionError as exc:  # pragma: no cover - _scan bounds the depth
        raise ProtocolError("The message is nested too deeply.") from exc
    except (ValueError, OverflowError, TypeError, msgpack.UnpackException) as exc:
        # Invalid UTF-8, timestamps outside datetime's range, and (guarded by _scan) msgpack's own errors.
        raise ProtocolError(f"Error reading MessagePack: {exc}") from exc


def _element(
    message: list[Any], index: int, name: str, kind: type | tuple[type, ...], *, nullable: bool = False
) -> Any:
    if index >= len(message):
        raise ProtocolError(f"Missing required property '{name}'.")
    value = message[index]
    if value is None:
        if nullable:
            return None
        raise ProtocolError(f"Missing required property '{name}'.")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"Property '{name}' has the wrong type.")
    return value


def _any_element(message: list[Any], index: int, name: str) -> Any:
    if index >= len(message):
        raise ProtocolError(f"Missing required property '{name}'.")
    return message[index]


def _check_headers(message: list[Any]) -> None:
    headers = _any_element(message, 1, "headers")
    if headers is None:
        return
    if not isinstance(headers, dict) or not all(isinstance(value, str) for value in headers.values()):
        raise ProtocolError("Property 'headers' must be a map of strings to strings.")


def _invocation_id(message: list[Any], *, nullable: bool) -> str | None:
    value = _element(message, 2, "invocationId", str, nullable=nullable)
    if value is not None and len(value) > MAX_INVOCATION_ID_LENGTH:
        raise ProtocolError(f"Invocation ID is longer than {MAX_INVOCATION_ID_LENGTH} characters.")
    return value  # type: ignore[no-any-return]


def _stream_ids(message: list[Any]) -> list[str]:
    if len(message) <= 5 or message[5] is None:
        return []
    value = message[5]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError("Property 'streamIds' must be a list of strings.")
    return value


def parse_message(body: bytes) -> HubMessage | None:
    """Parse one message body (without its length prefix) into a message.

    Returns ``None`` for an unknown numeric type (ignored for future protocol versions, as the .NET parser
    does). Elements past the ones a type defines are ignored, since the protocol appends fields over time.
    Timestamps decode to aware UTC ``datetime`` objects. Raises :class:`ProtocolError` for anything
    malformed, and nothing else whatever the bytes.
    """
    if not body:
        raise ProtocolError("A message of length zero was received.")
    message = _unpack(body)
    if not isinstance(message, list):
        raise ProtocolError("A hub message must be a MessagePack array.")
    if not message:
        raise ProtocolError("Missing required property 'type'.")
    kind = message[0]
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise ProtocolError("Property 'type' must be an integer.")
    if kind == MessageType.PING:
        return PingMessage()
    if kind == MessageType.CLOSE:
        return CloseMessage(
            error=_element(message, 1, "error", str, nullable=True),
            allow_reconnect=_element(message, 2, "allowReconnect", bool, nullable=True) if len(message) > 2 else None,
        )
    if kind == MessageType.ACK:
        return AckMessage(sequence_id=_element(message, 1, "sequenceId", int))
    if kind == MessageType.SEQUENCE:
        return SequenceMessage(sequence_id=_element(message, 1, "sequenceId", int))
    if kind not in _HEADED_TYPES:
        return None
    _check_headers(message)
    if kind == MessageType.INVOCATION:
        invocation_id = _invocation_id(message, nullable=True)
        return InvocationMessage(
            target=_element(message, 3, "target", str),
            arguments=_element(message, 4, "arguments", list),
            invocation_id=invocation_id,
            stream_ids=_stream_ids(message),
        )
    if kind == MessageType.STREAM_INVOCATION:
        return StreamInvocationMessage(
            invocation_id=_invocation_id(message, nullable=False) or "",
            target=_element(message, 3, "target", str),
            arguments=_element(message, 4, "arguments", list),
            stream_ids=_stream_ids(message),
        )
    if kind == MessageType.STREAM_ITEM:
        invocation_id = _invocation_id(message, nullable=False) or ""
        return StreamItemMessage(invocation_id=invocation_id, item=_any_element(message, 3, "item"))
    if kind == MessageType.COMPLETION:
        return _completion(message)
    return CancelInvocationMessage(invocation_id=_invocation_id(message, nullable=False) or "")


_HEADED_TYPES: Final = frozenset(
    {
        MessageType.INVOCATION,
        MessageType.STREAM_ITEM,
        MessageType.COMPLETION,
        MessageType.STREAM_INVOCATION,
        MessageType.CANCEL_INVOCATION,
    }
)


def _completion(message: list[Any]) -> CompletionMessage:
    invocation_id = _invocation_id(message, nullable=False) or ""
    result_kind = _element(message, 3, "resultKind", int)
    if result_kind == ERROR_RESULT:
        return CompletionMessage(invocation_id=invocation_id, error=_element(message, 4, "error", str))
    if result_kind == NON_VOID_RESULT:
        return CompletionMessage(
            invocation_id=invocation_id, result=_any_element(message, 4, "result"), has_result=True
        )
    if result_kind == VOID_RESULT:
        return CompletionMessage(invocation_id=invocation_id)
    raise ProtocolError("Invalid invocation result kind.")
