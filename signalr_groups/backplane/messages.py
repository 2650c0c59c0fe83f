"""The messages server processes exchange over the channel layer, and who this process is.

Every message is a dict with a ``type`` (one of the names below, so Channels' layers accept it)
and plain values only (channels-redis packs them with msgpack). A message that expects answers
also carries ``reply_to`` (a channel) and ``request_id``; answers are :data:`REPLY` messages
(see :mod:`signalr_groups.backplane.rpc`).
"""

from __future__ import annotations

import collections
import itertools
import os
import secrets
from typing import Final

#: A pre-serialized invocation for the local members of an address (``{"address", "payload", "origin"}``).
SEND: Final = "signalr.send"
#: Add a connection to a group, or remove it, on the process that owns the connection.
GROUP_ACTION: Final = "signalr.group_action"
#: Close a connection on the process that owns it.
ABORT: Final = "signalr.abort"
#: Close a Django user's connections (of one session, if given), in every hub.
REVOKE_ACCOUNT: Final = "signalr.revoke_account"
#: A user's current grants in a hub: end the memberships they no longer cover.
GROUP_ACCESS: Final = "signalr.group_access"
#: Count a group's local members.
GROUP_MEMBERS: Final = "signalr.group_members"
#: Apply a user-scoped membership change to the user's local connections.
USER_GROUP_ACTION: Final = "signalr.user_group_action"
#: List local connections (of a user, or in a group).
LIST_CONNECTIONS: Final = "signalr.list_connections"
#: Invoke a client method on a connection of the process that owns it and answer with its result.
CLIENT_INVOKE: Final = "signalr.client_invoke"
#: Client data of an HTTP-transport connection (a POST), relayed to the process that owns it.
HTTP_SEND: Final = "signalr.http_send"
#: A long poll relayed to the owner, which answers with what it had queued (or after the poll timeout).
HTTP_POLL: Final = "signalr.http_poll"
#: The client of a relayed poll went away: the owner drops the poll, keeping its data queued.
HTTP_POLL_CANCEL: Final = "signalr.http_poll_cancel"
#: A long-polling DELETE relayed to the owner.
HTTP_DELETE: Final = "signalr.http_delete"
#: Whether an HTTP-transport connection is live on some process, and with which transport.
HTTP_PROBE: Final = "signalr.http_probe"
#: Stateful reconnect on another process: a client's new socket asks the owner to take it (bridged).
SOCKET_RESUME: Final = "signalr.socket_resume"
#: A frame the client sent on a bridged socket, for the owner (answered once queued: backpressure).
SOCKET_DATA: Final = "signalr.socket_data"
#: The client's bridged socket closed.
SOCKET_GONE: Final = "signalr.socket_gone"
#: From the owner to the bridging process: a frame for the client's socket, or its close.
SOCKET_FRAME: Final = "signalr.socket_frame"
SOCKET_CLOSE: Final = "signalr.socket_close"
#: The answer to any of the above.
REPLY: Final = "signalr.reply"

#: Names this server process in answers (pub/sub layers count processes, not channels).
PROCESS: Final = f"{os.getpid()}-{secrets.token_hex(4)}"

_send_ids = itertools.count()


def new_send_id() -> str:
    """A cluster-unique id for one :data:`SEND` (receivers drop a repeat: see :class:`RecentIds`)."""
    return f"{PROCESS}:{next(_send_ids)}"


class RecentIds:
    """The last ``size`` ids seen; :meth:`first_time` tells a repeat apart.

    ``RedisChannelLayer`` delivers a message again when the clean-up of its backup copy fails (a
    Redis restart or failover, a partition, right after the delivery): a receiver that remembers
    recent send ids keeps delivery at most once.
    """

    __slots__ = ("_order", "_seen", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._seen: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def first_time(self, message_id: str) -> bool:
        """Record ``message_id``; False if it was seen among the last ``size`` ids."""
        if message_id in self._seen:
            return False
        self._seen.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True
