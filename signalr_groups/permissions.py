"""Permission classes for hubs and hub methods; see :mod:`signalr_groups.auth.permissions`."""

from __future__ import annotations

from signalr_groups.auth.permissions import (
    AllowAny,
    BasePermission,
    HasPermission,
    IsAuthenticated,
    IsStaff,
    as_permission,
    as_permissions,
    check_permissions,
    fresh_user,
)

__all__ = [
    "AllowAny",
    "BasePermission",
    "HasPermission",
    "IsAuthenticated",
    "IsStaff",
    "as_permission",
    "as_permissions",
    "check_permissions",
    "fresh_user",
]
