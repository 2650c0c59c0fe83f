"""``manage.py signalr_connections HUB``: list (or disconnect) live connections on every server process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from signalr_groups.lifetime.sending import abort
from signalr_groups.presence import group_members, list_connections


class Command(BaseCommand):
    """The hub context from a process that holds no connection: it asks every server over the layer."""

    help = (
        "List the live connections of a hub (its hub_name or import path) on every server process, "
        "or disconnect some. Needs the servers' shared layer (REDIS_URL) to see other processes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Hub key, filters, and the disconnect switch."""
        parser.add_argument("hub", help="the hub's hub_name (or import path)")
        parser.add_argument("--user", help="only this user identifier's connections")
        parser.add_argument("--group", help="only connections in this group (also prints its member count)")
        parser.add_argument(
            "--disconnect", action="store_true", help="close the listed connections (Close without reconnect)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print one line per connection, then a summary."""
        hub, user, group = options["hub"], options["user"], options["group"]
        try:
            connections = async_to_sync(list_connections)(hub, user=user, group=group)
        except Exception as exc:
            raise CommandError(f"Could not reach the servers: {exc}") from exc
        for info in connections:
            since = datetime.fromtimestamp(info.connected_at, tz=UTC).isoformat(timespec="seconds")
            groups = ",".join(info.groups) or "-"
            self.stdout.write(f"{info.connection_id}\t{info.user or '(anonymous)'}\t{groups}\t{since}\t{info.process}")
        users = {info.user for info in connections if info.user is not None}
        self.stdout.write(f"{len(connections)} connection(s), {len(users)} user(s)")
        if group is not None:
            members = async_to_sync(group_members)(hub, group)
            self.stdout.write(f"group {group}: {members.connection_count} connection(s), {members.user_count} user(s)")
        if options["disconnect"]:
            closed = sum(
                async_to_sync(abort)(hub, info.connection_id, "Disconnected by an administrator.", False)
                for info in connections
            )
            self.stdout.write(f"disconnected {closed}")
