"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class SignalRGroupsConfig(AppConfig):
    """``signalr_groups``: registers the system checks."""

    name = "signalr_groups"
    verbose_name = "SignalR groups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks."""
        from signalr_groups import checks  # noqa: F401 - registers the checks
