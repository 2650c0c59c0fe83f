"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class SignalRGroupsConfig(AppConfig):
    """``signalr_groups``: registers the system checks and the log filters (token redaction, dropped messages)."""

    name = "signalr_groups"
    verbose_name = "SignalR groups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks, keep tokens out of the server loggers, watch accounts for revocation."""
        from signalr_groups import checks, logfilters, receivers  # noqa: F401 - importing checks registers them

        logfilters.install()
        logfilters.install_capacity_watch()
        receivers.connect_all()
