"""Django admin for group access grants and their revocation trail.

The admin only changes the database. Connections react through the app's signal receivers once
the transaction commits: no admin code touches a socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from signalr_groups.models import GroupGrant, RevocationRecord
from signalr_groups.revocation import disconnect_user_on_commit

if TYPE_CHECKING:
    GrantAdminBase = admin.ModelAdmin[GroupGrant]
    RecordAdminBase = admin.ModelAdmin[RevocationRecord]
else:  # ModelAdmin is not subscriptable at run time
    GrantAdminBase = RecordAdminBase = admin.ModelAdmin


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


class DisconnectUserAdminMixin:
    """Add to your ``UserAdmin``: the action "Disconnect all of their connections" (every hub, every server)."""

    actions = ("disconnect_everywhere",)

    @admin.action(description=_("Disconnect all of their SignalR connections"), permissions=["change"])
    def disconnect_everywhere(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Close every connection of the selected users, after this request's transaction commits."""
        for user in queryset:
            disconnect_user_on_commit(user, reason=f"Disconnected by an administrator ({request.user}).")
        messages.success(request, f"Disconnecting {queryset.count()} user(s) everywhere.")
