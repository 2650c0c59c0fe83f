"""``manage.py signalr_access_token USERNAME``: print a bearer access token for a user."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from signalr_groups.auth.access_tokens import issue_access_token
from signalr_groups.conf import get_hub_settings


class Command(BaseCommand):
    """Issue an access token for a native client, a script or a test."""

    help = "Print a SignalR bearer access token for USERNAME (valid for ACCESS_TOKEN_LIFETIME seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The username."""
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the token."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist as exc:
            raise CommandError(f"No user {options['username']!r}.") from exc
        if not user.is_active:
            raise CommandError(f"User {options['username']!r} is inactive.")
        self.stdout.write(issue_access_token(user))
        self.stderr.write(f"valid for {int(get_hub_settings().access_token_lifetime)} seconds")
