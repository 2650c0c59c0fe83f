"""Exceptions raised by signalr_groups. Everything derives from :class:`SignalRGroupsError`."""

from __future__ import annotations


class SignalRGroupsError(Exception):
    """Root of every exception this package raises."""


class HubError(SignalRGroupsError):
    """An error whose message is sent to the calling client (SignalR's ``HubException``).

    Raise it from a hub method: the caller's invocation fails with
    ``An unexpected error occurred invoking 'Method' on the server. HubException: <message>``,
    the same text an ASP.NET Core server sends, and the connection stays open. Any other
    exception gives the generic text unless ``DETAILED_ERRORS`` is on.
    """


class InvalidGroupNameError(HubError, ValueError):
    """A group name that is not a string, is empty, or is longer than ``MAX_GROUP_NAME_LENGTH``."""


class InvalidTargetError(SignalRGroupsError, ValueError):
    """A client method name (the ``target`` of a send) that is not a non-empty string."""


class PayloadError(SignalRGroupsError, TypeError):
    """Arguments of a send, or a hub method's return value, that cannot be encoded as JSON."""


class ProtocolError(SignalRGroupsError):
    """A client broke the SignalR hub protocol; the connection is closed with a Close message."""


class MessageTooLargeError(ProtocolError):
    """A hub message larger than ``MAX_MESSAGE_SIZE``."""


class HandshakeError(ProtocolError):
    """A handshake request the server cannot accept; its message goes into the handshake response."""


class ConnectionClosedError(SignalRGroupsError):
    """Passed to ``on_disconnected`` when a connection ended without a clean close."""


class ClientResultError(SignalRGroupsError):
    """A client result (``clients.client(id).invoke(...)``) failed: the client answered with an error."""


class ClientResultTimeoutError(ClientResultError, TimeoutError):
    """A client result did not come within its timeout."""


class ClientGoneError(ClientResultError):
    """The connection asked for a client result closed, or no server holds it."""


class LimitExceededError(HubError):
    """A limit a deployer set was reached (``MAX_CONNECTIONS_PER_USER``, ``MAX_GROUPS_PER_CONNECTION``)."""


class GroupAccessDeniedError(HubError):
    """Joining a group was refused: a restricted group without a valid grant (or another join guard said no).

    Raised locally by ``groups.add_to_group`` and, for a connection on another server process,
    with the owning process's message.
    """
