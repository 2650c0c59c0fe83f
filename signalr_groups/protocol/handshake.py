"""The handshake: the first record a client sends, and the server's answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from signalr_groups.exceptions import HandshakeError, ProtocolError
from signalr_groups.protocol.json import RECORD_SEPARATOR, encode_json, loads_strict

#: Highest hub protocol version this server speaks, JSON and MessagePack (0 to 2 are accepted, as on .NET 8+).
JSON_PROTOCOL_VERSION: Final = 2
HANDSHAKE_OK: Final = "{}" + RECORD_SEPARATOR


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """A client's handshake: the protocol name and version it wants."""

    protocol: str
    version: int


def parse_handshake(record: str, supported: Iterable[str] = ("json",)) -> HandshakeRequest:
    """Parse and check a handshake request for one of the ``supported`` protocols (lower-case names).

    Raises :class:`HandshakeError` with the response text.
    """
    try:
        message = loads_strict(record)
    except ProtocolError as exc:
        raise HandshakeError(f"An unexpected error occurred during connection handshake. {exc}") from exc
    if not isinstance(message, dict):
        raise HandshakeError(
            "An unexpected error occurred during connection handshake. The handshake must be a JSON object."
        )
    protocol = message.get("protocol")
    version = message.get("version")
    if not isinstance(protocol, str):
        raise HandshakeError(
            "An unexpected error occurred during connection handshake. Missing required property 'protocol'."
        )
    if isinstance(version, bool) or not isinstance(version, int):
        raise HandshakeError(
            "An unexpected error occurred during connection handshake. Missing required property 'version'."
        )
    if protocol.lower() not in supported:
        raise HandshakeError(f"The protocol '{protocol}' is not supported.")
    if not 0 <= version <= JSON_PROTOCOL_VERSION:
        raise HandshakeError(f"The server does not support version {version} of the '{protocol}' protocol.")
    return HandshakeRequest(protocol=protocol.lower(), version=version)


def transfer_format_error(protocol: str, transfer_format: str) -> str:
    """The handshake error for a protocol the transport cannot carry (MessagePack over Server-Sent Events)."""
    return (
        f"Cannot use the '{protocol}' protocol on the current transport. "
        f"The transport does not support '{transfer_format}' transfer format."
    )


def write_handshake_error(error: str) -> str:
    """Return a failed handshake response record."""
    return encode_json({"error": error}) + RECORD_SEPARATOR
