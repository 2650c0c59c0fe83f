"""Django app configuration: where the features plug into the core."""

from __future__ import annotations

from django.apps import AppConfig


class SignalRGroupsConfig(AppConfig):
    """``signalr_groups``: registers system checks, log filters, and the features' extensions and receivers."""

    name = "signalr_groups"
    verbose_name = "SignalR groups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks, keep tokens out of the server loggers, plug in the features.

        Imported here, not at the top: Django imports this module before the app registry is
        ready, and these modules use models.
        """
        from signalr_groups import checks, logfilters  # noqa: F401 - importing checks registers them
        from signalr_groups.access import receivers
        from signalr_groups.access.guard import GroupAccessGuard
        from signalr_groups.access.revocation import AccountRevocation
        from signalr_groups.lifetime.extensions import register_extension
        from signalr_groups.presence import Presence
        from signalr_groups.server.client_results import ClientResultsRelay
        from signalr_groups.server.http_connections import HttpConnections
        from signalr_groups.server.socket_bridge import SocketBridges
        from signalr_groups.server.stateful import HeldConnections
        from signalr_groups.user_groups import UserGroups

        logfilters.install()
        logfilters.install_capacity_watch()
        # Order matters: the grant check runs before any other join hook.
        for extension in (
            GroupAccessGuard,
            AccountRevocation,
            UserGroups,
            Presence,
            HttpConnections,
            ClientResultsRelay,
            HeldConnections,
            SocketBridges,
        ):
            register_extension(extension)
        receivers.connect_all()
