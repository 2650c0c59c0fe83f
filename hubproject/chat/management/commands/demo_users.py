"""``manage.py demo_users``: create the demo accounts (idempotent)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_PASSWORD = "signalr-demo"
USERS = (("alice", False), ("bob", False), ("carol", False), ("admin", True))


class Command(BaseCommand):
    """Create alice, bob, carol and a superuser admin, all with the password ``signalr-demo``."""

    help = "Create the demo users (password: signalr-demo)."

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or reset the demo users."""
        user_model = get_user_model()
        for username, is_admin in USERS:
            user, created = user_model.objects.get_or_create(username=username)
            user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = is_admin
            user.save()
            self.stdout.write(f"{'created' if created else 'reset'} {username} / {DEMO_PASSWORD}")
