"""The handshake: the first record a client sends, and the server's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from signalr_groups.exceptions import HandshakeError, ProtocolError
from signalr_groups.protocol.json import RECORD_SEPARATOR, encode_json, loads_strict

#: Highest JSON hub protocol version this server speaks (versions 0 to 2 are accepted, as on .NET 8+).
JSON_PROTOCOL_VERSION: Final = 2
HANDSHAKE_OK: Final = "{}" + RECORD_SEPARATOR


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """A client's handshake: the protocol name and version it wants."""

    protocol: str
    version: int


def parse_handshake(record: str) -> HandshakeRequest:
    """Parse and check a handshake request; raise :class:`HandshakeError` with the response text."""
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
    if protocol.lower() != "json":
        raise HandshakeError(f"The protocol '{protocol}' is not supported.")
    if not 0 <= version <= JSON_PROTOCOL_VERSION:
        raise HandshakeError(f"The server does not support version {version} of the '{protocol}' protocol.")
    return HandshakeRequest(protocol="json", version=version)


def write_handshake_error(error: str) -> str:
    """Return a failed handshake response record."""
    return encode_json({"error": error}) + RECORD_SEPARATOR
