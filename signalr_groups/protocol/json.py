"""The JSON hub protocol: records separated by 0x1E, parsed defensively, written compactly."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from django.core.serializers.json import DjangoJSONEncoder

from signalr_groups.exceptions import MessageTooLargeError, PayloadError, ProtocolError
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

#: The record separator that ends every JSON hub message.
RECORD_SEPARATOR: Final = "\x1e"
#: Longest invocation id accepted from a client.
MAX_INVOCATION_ID_LENGTH: Final = 256
PING_RECORD: Final = '{"type":6}\x1e'

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Encoder(DjangoJSONEncoder):
    """JSON encoder for payloads: Django's (dates, decimals, UUIDs, lazy strings)."""


_encoder = _Encoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(value: Any) -> str:
    """Encode ``value`` compactly; raises :class:`PayloadError` for what JSON cannot carry.

    NaN and infinities are refused (browsers reject them), and so are lone surrogates, which
    would fail later when the text frame is encoded as UTF-8 for each recipient.
    """
    try:
        text = _encoder.encode(value)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"Cannot encode as JSON: {exc}") from exc
    except UnicodeEncodeError as exc:  # pragma: no cover - UnicodeEncodeError is a ValueError
        raise PayloadError(f"Cannot encode as UTF-8: {exc}") from exc
    return text


def write_invocation(target: str, arguments: list[Any] | tuple[Any, ...], invocation_id: str | None = None) -> str:
    """Return one Invocation record: non-blocking (serialized once for every recipient), or with an
    ``invocation_id`` that asks the client for a result (a client result)."""
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return encode_json(message) + RECORD_SEPARATOR


def write_completion(
    invocation_id: str, *, result: Any = None, error: str | None = None, has_result: bool = False
) -> str:
    """Return a Completion record: with ``error``, with ``result`` (``has_result``), or void."""
    message: dict[str, Any] = {"type": 3, "invocationId": invocation_id}
    if error is not None:
        message["error"] = error
    elif has_result:
        message["result"] = result
    return encode_json(message) + RECORD_SEPARATOR


def write_stream_item(invocation_id: str, item: Any) -> str:
    """Return a StreamItem record (raises :class:`PayloadError` for an item JSON cannot carry)."""
    return encode_json({"type": 2, "invocationId": invocation_id, "item": item}) + RECORD_SEPARATOR


def write_close(error: str | None = None, allow_reconnect: bool | None = None) -> str:
    """Return a Close record."""
    message: dict[str, Any] = {"type": 7}
    if error is not None:
        message["error"] = error
    if allow_reconnect is not None:
        message["allowReconnect"] = allow_reconnect
    return encode_json(message) + RECORD_SEPARATOR


def write_ack(sequence_id: int) -> str:
    """Return an Ack record (stateful reconnect: every message up to ``sequence_id`` arrived)."""
    return f'{{"type":8,"sequenceId":{int(sequence_id)}}}' + RECORD_SEPARATOR


def write_sequence(sequence_id: int) -> str:
    """Return a Sequence record (stateful reconnect: the id of the next message sent)."""
    return f'{{"type":9,"sequenceId":{int(sequence_id)}}}' + RECORD_SEPARATOR


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to infinity
        raise ValueError("A number is out of the range of a double.")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate keys in a JSON object")
    return result


def _check_surrogates(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for item in value:
            _check_surrogates(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_surrogates(item)


def loads_strict(text: str) -> Any:
    """Parse JSON, refusing NaN/Infinity, duplicate keys, lone surrogates, BOMs and deep nesting.

    Raises :class:`ProtocolError` and nothing else.
    """
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_parse_float, object_pairs_hook=_unique_keys
        )
        if _SURROGATE_ESCAPE.search(text):
            _check_surrogates(value)
    except RecursionError as exc:
        raise ProtocolError("The message is nested too deeply.") from exc
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"Error reading JSON: {exc}") from exc
    return value


class RecordReader:
    """Splits incoming text into 0x1E-terminated records, across and within frames.

    A record may span several frames and a frame may hold several records. A record (or the
    unfinished tail of one) longer than ``max_message_size`` bytes raises
    :class:`MessageTooLargeError`, after the complete records before it were returned.
    """

    __slots__ = ("_buffer", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._buffer = ""
        self.max_message_size = max_message_size

    @property
    def pending_chars(self) -> int:
        """Characters of an unfinished record held until its separator arrives (at most ``max_message_size``)."""
        return len(self._buffer)

    def _too_large(self, text: str) -> bool:
        limit = self.max_message_size
        if len(text) * 4 <= limit:
            return False
        return len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit

    def feed(self, text: str) -> tuple[list[str], MessageTooLargeError | None]:
        """Add a frame's text; return the complete records and an error if one was too large."""
        data = self._buffer + text if self._buffer else text
        *records, tail = data.split(RECORD_SEPARATOR)
        complete: list[str] = []
        for record in records:
            if self._too_large(record):
                self._buffer = ""
                return complete, self._error()
            complete.append(record)
        if self._too_large(tail):
            self._buffer = ""
            return complete, self._error()
        self._buffer = tail
        return complete, None

    def _error(self) -> MessageTooLargeError:
        return MessageTooLargeError(f"The maximum message size of {self.max_message_size}B was exceeded.")


def _field(message: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    value = message.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"Missing required property '{name}'.")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"Property '{name}' has the wrong type.")
    return value


def _invocation_id(message: dict[str, Any], required: bool) -> str | None:
    value = _field(message, "invocationId", str, required)
    if value is not None and len(value) > MAX_INVOCATION_ID_LENGTH:
        raise ProtocolError(f"Invocation ID is longer than {MAX_INVOCATION_ID_LENGTH} characters.")
    return value  # type: ignore[no-any-return]


def _stream_ids(message: dict[str, Any]) -> list[str]:
    value = _field(message, "streamIds", list, required=False)
    if value is None:
        return []
    if not all(isinstance(item, str) for item in value):
        raise ProtocolError("Property 'streamIds' must be a list of strings.")
    return value  # type: ignore[no-any-return]


def parse_message(record: str) -> HubMessage | None:
    """Parse one record (without its separator) into a message.

    Returns ``None`` for an unknown numeric ``type`` (ignored for future protocol versions, as
    the .NET parser does). Raises :class:`ProtocolError` for anything malformed.
    """
    message = loads_strict(record)
    if not isinstance(message, dict):
        raise ProtocolError("A hub message must be a JSON object.")
    kind = message.get("type")
    if kind is None:
        raise ProtocolError("Missing required property 'type'.")
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise ProtocolError("Property 'type' must be an integer.")
    headers = message.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise ProtocolError("Property 'headers' must be an object.")
    if kind == MessageType.INVOCATION:
        return InvocationMessage(
            target=_field(message, "target", str),
            arguments=_field(message, "arguments", list),
            invocation_id=_invocation_id(message, required=False),
            stream_ids=_stream_ids(message),
        )
    if kind == MessageType.STREAM_INVOCATION:
        return StreamInvocationMessage(
            invocation_id=_invocation_id(message, required=True) or "",
            target=_field(message, "target", str),
            arguments=_field(message, "arguments", list),
            stream_ids=_stream_ids(message),
        )
    if kind == MessageType.STREAM_ITEM:
        if "item" not in message:
            raise ProtocolError("Missing required property 'item'.")
        return StreamItemMessage(invocation_id=_invocation_id(message, required=True) or "", item=message["item"])
    if kind == MessageType.COMPLETION:
        if "result" in message and "error" in message:
            raise ProtocolError("The 'error' and 'result' properties are mutually exclusive.")
        error = _field(message, "error", str, required=False)
        return CompletionMessage(
            invocation_id=_invocation_id(message, required=True) or "",
            result=message.get("result"),
            error=error,
            has_result="result" in message,
        )
    if kind == MessageType.CANCEL_INVOCATION:
        return CancelInvocationMessage(invocation_id=_invocation_id(message, required=True) or "")
    if kind == MessageType.PING:
        return PingMessage()
    if kind == MessageType.CLOSE:
        return CloseMessage(
            error=_field(message, "error", str, required=False),
            allow_reconnect=_field(message, "allowReconnect", bool, required=False),
        )
    if kind == MessageType.ACK:
        return AckMessage(sequence_id=_field(message, "sequenceId", int))
    if kind == MessageType.SEQUENCE:
        return SequenceMessage(sequence_id=_field(message, "sequenceId", int))
    return None
