"""Group access grants: what the demo and projects read; see :mod:`signalr_groups.access`."""

from __future__ import annotations

from signalr_groups.access.grant_store import active_grants, fresh_active_grants
from signalr_groups.access.grants import GROUP_ACCESS_REVOKED, GrantList, access_until, grant_matches

__all__ = ["GROUP_ACCESS_REVOKED", "GrantList", "access_until", "active_grants", "fresh_active_grants", "grant_matches"]
