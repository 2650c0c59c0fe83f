"""Django admin: group access grants and their revocation trail, user-scoped memberships, live connections.

Grants: the admin only changes the database; connections react through the app's signal
receivers once the transaction commits. User-scoped memberships are applied to live
connections after commit. The live-connections page asks every server process.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from signalr_groups.access.revocation import disconnect_user_on_commit
from signalr_groups.hubs.hub_context import get_hub_context
from signalr_groups.models import GroupGrant, LiveConnection, RevocationRecord, UserGroupMembership
from signalr_groups.server.routing import routed_hubs
from signalr_groups.user_groups import apply_user_group_everywhere

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    GrantAdminBase = admin.ModelAdmin[GroupGrant]
    RecordAdminBase = admin.ModelAdmin[RevocationRecord]
    MembershipAdminBase = admin.ModelAdmin[UserGroupMembership]
    LiveAdminBase = admin.ModelAdmin[LiveConnection]
else:  # ModelAdmin is not subscriptable at run time
    GrantAdminBase = RecordAdminBase = MembershipAdminBase = LiveAdminBase = admin.ModelAdmin


class GrantStatusFilter(admin.SimpleListFilter):
    """Active / expired / revoked."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The three states."""
        return [("active", _("active")), ("expired", _("expired")), ("revoked", _("revoked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        """Filter by state."""
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(GroupGrant)
class GroupGrantAdmin(GrantAdminBase):
    """Grants: list, filter, search, edit expiry, and revoke in bulk ("Revoke now")."""

    list_display = ("hub", "group", "user", "auth_group", "expires_at", "status", "granted_by", "granted_at")
    list_filter = (GrantStatusFilter, "hub", "group", ("user", admin.RelatedOnlyFieldListFilter), "auth_group")
    search_fields = ("hub", "group", "user__username", "auth_group__name")
    readonly_fields = ("granted_by", "granted_at", "revoked_at", "revoked_by", "revoke_reason")
    autocomplete_fields = ()
    actions = ("revoke_now",)
    date_hierarchy = "granted_at"

    @admin.display(description=_("status"))
    def status(self, grant: GroupGrant) -> str:
        """Active, expired or revoked."""
        if grant.revoked_at is not None:
            return str(_("revoked"))
        return str(_("active")) if grant.is_active() else str(_("expired"))

    def save_model(self, request: HttpRequest, obj: GroupGrant, form: Any, change: bool) -> None:
        """Remember who granted."""
        if not change and obj.granted_by_id is None:
            obj.granted_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Revoke now (holders leave the group at once)"), permissions=["change"])
    def revoke_now(self, request: HttpRequest, queryset: QuerySet[GroupGrant]) -> None:
        """Revoke the selected grants; their holders' connections leave the groups after commit."""
        revoked = 0
        for grant in queryset.filter(revoked_at__isnull=True):
            grant.revoke(by=request.user, reason=f"Revoked in the admin by {request.user}")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} grant(s).", messages.SUCCESS)


@admin.register(RevocationRecord)
class RevocationRecordAdmin(RecordAdminBase):
    """The audit trail of revocations (read-only)."""

    list_display = ("created_at", "hub", "group", "username", "cause", "reason", "revoked_by")
    list_filter = ("cause", "hub")
    search_fields = ("group", "username", "reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Records are written by the app only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Records are immutable."""
        return False


def _apply_after_commit(action: str, memberships: list[tuple[str, str, str]]) -> None:
    def run() -> None:
        for hub, group, user in memberships:
            try:
                async_to_sync(apply_user_group_everywhere)(hub, action, user, group)
            except Exception:
                logger.exception("signalr_groups: could not apply %s of %s to %s:%s", action, user, hub, group)

    transaction.on_commit(run)


@admin.register(UserGroupMembership)
class UserGroupMembershipAdmin(MembershipAdminBase):
    """User-scoped memberships: adding or deleting one here applies to the user's live connections too."""

    list_display = ("user_identifier", "hub", "group", "created_at")
    list_filter = ("hub", "group")
    search_fields = ("user_identifier", "group")
    fields = ("hub", "group", "user_identifier")

    def save_model(self, request: HttpRequest, obj: UserGroupMembership, form: Any, change: bool) -> None:
        """Store, then (after commit) move the user's connections into the group."""
        if change:
            old = UserGroupMembership.objects.filter(pk=obj.pk).values_list("hub", "group", "user_identifier").first()
            if old is not None:
                _apply_after_commit("remove", [old])
        super().save_model(request, obj, form, change)
        _apply_after_commit("add", [(obj.hub, obj.group, obj.user_identifier)])

    def delete_model(self, request: HttpRequest, obj: UserGroupMembership) -> None:
        """Delete, then (after commit) take the user's connections out of the group."""
        _apply_after_commit("remove", [(obj.hub, obj.group, obj.user_identifier)])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[UserGroupMembership]) -> None:
        """Bulk delete, with the same effect on live connections."""
        _apply_after_commit("remove", list(queryset.values_list("hub", "group", "user_identifier")))
        super().delete_queryset(request, queryset)


@admin.register(LiveConnection)
class LiveConnectionAdmin(LiveAdminBase):
    """Live connections of each routed hub, on every server: per user, per group, and one by one.

    Staff with the ``change`` permission can disconnect a connection or every connection of a
    user (with ``allowReconnect: false``: the client does not come back by itself).
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Connections are made by clients, not here."""
        return False

    def get_urls(self) -> list[URLPattern]:
        """Only the list page: there is no table behind this model, so no change or history pages."""
        info = self.opts.app_label, self.opts.model_name
        return [path("", self.admin_site.admin_view(self.changelist_view), name=f"{info[0]}_{info[1]}_changelist")]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Disconnecting is a POST on the list page (needs the change permission)."""
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """List the live connections of one hub (``?hub=``), optionally of one ``user`` or ``group``."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        hubs = routed_hubs()
        hub_key = request.GET.get("hub") or next(iter(hubs), "")
        hub = hubs.get(hub_key)
        if request.method == "POST":
            if not self.has_change_permission(request) or hub is None:
                raise PermissionDenied
            return self._disconnect(request, hub)
        user = request.GET.get("user") or None
        group = request.GET.get("group") or None
        connections = get_hub_context(hub).sync.get_connections(user=user, group=group) if hub else []
        # Who is here now: a connection waiting for its client to reconnect is listed, not counted.
        live = [info for info in connections if not info.reconnecting]
        per_user = Counter(info.user for info in live)
        group_connections: Counter[str] = Counter()
        group_users: dict[str, set[str]] = {}
        for info in live:
            for name in info.groups:
                group_connections[name] += 1
                if info.user is not None:
                    group_users.setdefault(name, set()).add(info.user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Live connections"),
            "hubs": list(hubs),
            "hub_key": hub_key,
            "user_filter": user or "",
            "group_filter": group or "",
            "connections": [(info, datetime.fromtimestamp(info.connected_at, tz=UTC)) for info in connections],
            "live_count": len(live),
            "reconnecting_count": sum(1 for info in connections if info.reconnecting),
            "per_user": sorted(per_user.items(), key=lambda item: (item[0] is None, item[0] or "")),
            "per_group": sorted(
                (name, count, len(group_users.get(name, ()))) for name, count in group_connections.items()
            ),
            "processes": len({info.process for info in connections}),
            "can_disconnect": self.has_change_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/signalr_groups/live_connections.html", context)

    def _disconnect(self, request: HttpRequest, hub: Any) -> HttpResponse:
        context = get_hub_context(hub).sync
        reason = "Disconnected by an administrator."
        connection_id = request.POST.get("connection_id")
        user = request.POST.get("user")
        if connection_id:
            found = context.abort(connection_id, error=reason)
            messages.add_message(
                request,
                messages.SUCCESS if found else messages.WARNING,
                _("Disconnected %(id)s.") % {"id": connection_id}
                if found
                else _("No server holds %(id)s any more.") % {"id": connection_id},
            )
        elif user:
            closed = sum(context.abort(info.connection_id, error=reason) for info in context.get_connections(user=user))
            messages.success(request, _("Disconnected %(n)d connection(s) of %(user)s.") % {"n": closed, "user": user})
        return HttpResponseRedirect(request.get_full_path())


class DisconnectUserAdminMixin:
    """Add to your ``UserAdmin``: the action "Disconnect all of their connections" (every hub, every server)."""

    actions = ("disconnect_everywhere",)

    @admin.action(description=_("Disconnect all of their SignalR connections"), permissions=["change"])
    def disconnect_everywhere(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Close every connection of the selected users, after this request's transaction commits."""
        for user in queryset:
            disconnect_user_on_commit(user, reason=f"Disconnected by an administrator ({request.user}).")
        messages.success(request, f"Disconnecting {queryset.count()} user(s) everywhere.")
