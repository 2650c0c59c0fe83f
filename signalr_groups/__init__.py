"""signalr_groups: ASP.NET Core SignalR hubs for Django Channels.

The public surface is small: subclass :class:`Hub`, mark the methods clients may call with
:func:`hub_method`, raise :class:`HubError` to send an error text to the caller, and use
:func:`get_hub_context` to reach connected clients from views, tasks and signal receivers.
"""

from __future__ import annotations

from signalr_groups.exceptions import (
    ClientGoneError,
    ClientResultError,
    ClientResultTimeoutError,
    HubError,
    SignalRGroupsError,
)
from signalr_groups.hubs.hub import Hub
from signalr_groups.hubs.hub_context import HubContext, SyncHubContext, get_hub_context
from signalr_groups.hubs.methods import hub_method

__version__ = "0.1.0"

__all__ = [
    "ClientGoneError",
    "ClientResultError",
    "ClientResultTimeoutError",
    "Hub",
    "HubContext",
    "HubError",
    "SignalRGroupsError",
    "SyncHubContext",
    "__version__",
    "get_hub_context",
    "hub_method",
]
