"""Demo admin: the User admin gains "Disconnect all of their SignalR connections"."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from signalr_groups.admin import DisconnectUserAdminMixin

User = get_user_model()


class DemoUserAdmin(DisconnectUserAdminMixin, UserAdmin):  # type: ignore[misc,type-arg]
    """Django's UserAdmin plus the disconnect-everywhere action."""


admin.site.unregister(User)
admin.site.register(User, DemoUserAdmin)
