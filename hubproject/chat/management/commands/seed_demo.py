"""``manage.py seed_demo``: the demo's users, rooms and grants (idempotent: safe to run again)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

DEMO_PASSWORD = "signalr-demo"
#: (username, staff and superuser?)
USERS = (("alice", False), ("bob", False), ("carol", False), ("admin", True))
#: (slug, name, description); whether a room is restricted is ChatHub.restricted_groups' call.
ROOMS = (
    ("lobby", "Lobby", "Everyone is welcome."),
    ("random", "Random", "Off-topic chatter."),
    ("vip-lounge", "VIP lounge", "Restricted: alice has a grant, and so has the auth group vips (bob)."),
    ("vip-backstage", "VIP backstage", "Restricted: for the auth group vips (bob), not alice."),
    ("staff-room", "Staff room", "Restricted: admin only."),
)


class Command(BaseCommand):
    """Create alice, bob, carol and the superuser admin (password ``signalr-demo``), rooms and grants."""

    help = "Create the demo users (password: signalr-demo), rooms and grants."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--force``: run even with DEBUG off."""
        parser.add_argument(
            "--force", action="store_true", help="Run even when DEBUG is off (it resets these users' passwords)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Create what is missing and reset the demo users' passwords and flags."""
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo resets the passwords of alice, bob, carol and admin; DEBUG is off, so this looks like "
                "a real site. Use --force if it is not."
            )
        from django.contrib.auth.models import Group

        from hubproject.chat.models import Room
        from signalr_groups.models import GroupGrant

        user_model = get_user_model()
        users = {}
        for username, is_admin in USERS:
            user, created = user_model.objects.get_or_create(username=username)
            if created or not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = is_admin
            user.is_active = True
            user.save()
            users[username] = user
            self.stdout.write(f"{'created' if created else 'reset'} user {username} / {DEMO_PASSWORD}")
        for slug, name, description in ROOMS:
            Room.objects.update_or_create(slug=slug, defaults={"name": name, "description": description})
        self.stdout.write("rooms: " + ", ".join(slug for slug, _name, _description in ROOMS))
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
        self.stdout.write("grants: alice → vip-lounge; auth group vips (bob) → vip-*; admin → staff-room")
