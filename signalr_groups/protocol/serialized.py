"""An invocation for many recipients, serialized at most once per hub protocol.

Like ASP.NET Core's ``SerializedHubMessage``: a group send of one message to JSON and
MessagePack members writes the JSON record once (when sent, so that a payload JSON cannot carry
fails at the call) and the MessagePack message once, on first use by a MessagePack member;
every member then shares the same text or bytes. Across the channel layer both forms travel in
the one message, so a receiving process serializes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from signalr_groups.exceptions import PayloadError
from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol import messagepack

logger = logging.getLogger(__name__)


class SerializedInvocation:
    """A non-blocking Invocation of client method ``target``, as JSON (always) and MessagePack (lazily)."""

    __slots__ = ("_arguments", "_msgpack", "_target", "binary_frame", "json", "text_frame")

    def __init__(
        self,
        json: str,
        msgpack: bytes | None = None,
        *,
        target: str | None = None,
        arguments: list[Any] | tuple[Any, ...] | None = None,
    ) -> None:
        #: The JSON record (with its 0x1E).
        self.json = json
        self._msgpack = msgpack
        self._target = target
        self._arguments = arguments
        #: The WebSocket frames of the JSON and MessagePack forms, built by the server layer for
        #: its first recipient and shared by the others (see :mod:`signalr_groups.server.uvicorn_socket`).
        self.text_frame: bytes | None = None
        self.binary_frame: bytes | None = None

    @classmethod
    def of(cls, target: str, arguments: list[Any] | tuple[Any, ...]) -> SerializedInvocation:
        """Serialize an invocation of ``target`` (raises :class:`PayloadError` if JSON cannot carry it)."""
        return cls(json_protocol.write_invocation(target, arguments), target=target, arguments=arguments)

    def msgpack_or_raise(self) -> bytes:
        """The MessagePack message (length prefix included); raises :class:`PayloadError` if it cannot be written."""
        found = self._msgpack
        if found is None:
            if self._target is not None and self._arguments is not None:
                found = messagepack.write_invocation(self._target, self._arguments)
            else:
                found = messagepack.invocation_from_json_record(self.json)
            self._msgpack = found
            self._arguments = None  # written: the payload need not be kept
        return found

    @property
    def msgpack(self) -> bytes:
        """The MessagePack message, or ``b""`` (logged once) when the payload has no MessagePack form."""
        try:
            return self.msgpack_or_raise()
        except PayloadError as exc:
            logger.error(
                "signalr_groups: an invocation of %r cannot be sent to MessagePack clients: %s", self._target, exc
            )
            self._msgpack = b""
            return b""
