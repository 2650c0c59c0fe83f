"""``manage.py demo_users``: create the demo accounts (idempotent)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_PASSWORD = "signalr-demo"
USERS = (("alice", False), ("bob", False), ("carol", False), ("admin", True))


class Command(BaseCommand):
    """Create alice, bob, carol and a superuser admin (password ``signalr-demo``) and demo grants."""

    help = "Create the demo users (password: signalr-demo)."

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or reset the demo users."""
        from django.contrib.auth.models import Group

        from signalr_groups.models import GroupGrant

        user_model = get_user_model()
        users = {}
        for username, is_admin in USERS:
            user, created = user_model.objects.get_or_create(username=username)
            if created or user.check_password(DEMO_PASSWORD) is False:
                user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = is_admin
            user.is_active = True
            user.save()
            users[username] = user
            self.stdout.write(f"{'created' if created else 'reset'} {username} / {DEMO_PASSWORD}")
        vips, _ = Group.objects.get_or_create(name="vips")
        users["bob"].groups.add(vips)
        grants = [
            {"group": "vip-lounge", "user": users["alice"]},
            {"group": "vip-*", "auth_group": vips},
            {"group": "staff-room", "user": users["admin"]},
        ]
        for grant in grants:
            if not GroupGrant.objects.active().filter(hub="chat", **grant).exists():
                GroupGrant.objects.create(hub="chat", granted_by=users["admin"], **grant)
        self.stdout.write("grants: alice → vip-lounge; group vips (bob) → vip-*; admin → staff-room")
