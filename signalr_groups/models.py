"""Group access grants, and the audit trail of their revocations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

#: Fields whose change can end someone's access.
_ACCESS_FIELDS = frozenset(
    {"revoked_at", "expires_at", "user", "user_id", "auth_group", "auth_group_id", "group", "hub"}
)


#: Sent by ``GroupGrant.objects.filter(...).update(...)`` (which sends no ``post_save``), with the
#: grants as they were (``before``, a list) and as they are now (``after``, a queryset).
grants_updated = Signal()


def _check_constraint(condition: Q, name: str) -> models.CheckConstraint:
    """A ``CheckConstraint`` on any supported Django: 5.1 renamed ``check=`` to ``condition=`` (6.0 drops ``check=``)."""
    options: dict[str, Any] = {"condition" if django.VERSION >= (5, 1) else "check": condition}
    return models.CheckConstraint(name=name, **options)


class GroupGrantQuerySet(models.QuerySet["GroupGrant"]):
    """Queries over grants."""

    def active(self, now: datetime | None = None) -> GroupGrantQuerySet:
        """Grants neither revoked nor expired."""
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def for_user(self, user: Any) -> GroupGrantQuerySet:
        """Grants to the user directly or to one of the user's auth groups."""
        return self.filter(Q(user=user) | Q(auth_group__in=user.groups.all()))

    def revoke(self, by: Any = None, reason: str = "") -> int:
        """Revoke every active grant here (one by one, so that revocation reaches the holders)."""
        grants = list(self.filter(revoked_at__isnull=True))
        for grant in grants:
            grant.revoke(by=by, reason=reason)
        return len(grants)

    def update(self, **kwargs: Any) -> int:
        """``QuerySet.update`` sends no signals: re-check the holders here, so no revocation is silent."""
        affected = list(self) if _ACCESS_FIELDS & set(kwargs) else []
        count = super().update(**kwargs)
        if affected:
            grants_updated.send(
                sender=self.model,
                before=affected,
                after=self.model._default_manager.filter(pk__in=[g.pk for g in affected]),
            )
        return count


class GroupGrant(models.Model):
    """Access to one restricted hub group (or to every group with a prefix) for a user or an auth group."""

    hub = models.CharField(_("hub"), max_length=200, help_text=_("The hub's name (Hub.hub_name)."))
    group = models.CharField(
        _("group"), max_length=257, help_text=_('The group name, or a prefix ending in "*" (e.g. "vip-*").')
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="signalr_grants",
    )
    auth_group = models.ForeignKey(
        "auth.Group",
        verbose_name=_("auth group"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="signalr_grants",
    )
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("granted by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    granted_at = models.DateTimeField(_("granted at"), auto_now_add=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("revoked by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoke_reason = models.CharField(_("revoke reason"), max_length=200, blank=True)

    objects = GroupGrantQuerySet.as_manager()

    class Meta:
        verbose_name = _("group access grant")
        verbose_name_plural = _("group access grants")
        ordering = ("hub", "group", "-granted_at")
        indexes = [models.Index(fields=("hub", "group"))]
        constraints = [
            _check_constraint(
                (Q(user__isnull=False) & Q(auth_group__isnull=True))
                | (Q(user__isnull=True) & Q(auth_group__isnull=False)),
                name="signalr_grant_user_xor_auth_group",
            )
        ]

    def __str__(self) -> str:
        holder = self.user if self.user_id is not None else self.auth_group
        return f"{holder} → {self.hub}:{self.group}"

    def is_active(self, now: datetime | None = None) -> bool:
        """Neither revoked nor expired."""
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def revoke(self, by: Any = None, reason: str = "") -> None:
        """Revoke now (saved; the holders' connections leave the group once the transaction commits)."""
        if self.revoked_at is not None:
            return
        self.revoked_at = timezone.now()
        self.revoked_by = by if getattr(by, "is_authenticated", False) else None
        self.revoke_reason = reason[:200]
        self.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])


class RevocationRecord(models.Model):
    """Audit trail: who lost access to which hub group, when, why, and on whose action."""

    class Cause(models.TextChoices):
        REVOKED = "revoked", _("grant revoked")
        DELETED = "deleted", _("grant deleted")
        EXPIRED = "expired", _("grant expired")
        AUTH_GROUP_LEFT = "auth-group-left", _("left the auth group")
        CHANGED = "changed", _("grant changed")

    hub = models.CharField(_("hub"), max_length=200)
    group = models.CharField(_("group"), max_length=257)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(_("username"), max_length=150, blank=True)
    cause = models.CharField(_("cause"), max_length=20, choices=Cause.choices)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("revoked by"), null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        verbose_name = _("revocation")
        verbose_name_plural = _("revocations")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.username or self.user_id}: {self.hub}:{self.group} ({self.cause})"


class UserGroupMembership(models.Model):
    """A user-scoped group membership: every connection of the user, now and future, is in the group.

    Beyond SignalR, whose memberships belong to one connection and end with it. Created by
    ``groups.add_user_to_group(user_id, name)``; each new connection of the user (another
    device, a reconnect, a restarted server) joins the group when it connects, after a fresh
    grant check if the group is restricted.
    """

    hub = models.CharField(_("hub"), max_length=200)
    group = models.CharField(_("group"), max_length=256)
    user_identifier = models.CharField(_("user identifier"), max_length=256)
    created_at = models.DateTimeField(_("since"), auto_now_add=True)

    class Meta:
        verbose_name = _("user group membership")
        verbose_name_plural = _("user group memberships")
        ordering = ("hub", "group", "user_identifier")
        constraints = [
            models.UniqueConstraint(fields=("hub", "group", "user_identifier"), name="signalr_groups_user_membership")
        ]
        indexes = [models.Index(fields=("hub", "user_identifier"), name="signalr_groups_membership_user")]

    def __str__(self) -> str:
        return f"{self.user_identifier} in {self.hub}:{self.group}"


class LiveConnection(models.Model):
    """Not a table: the admin's page of live connections on every server (``LiveConnectionAdmin``).

    Its ``change`` permission lets staff disconnect connections there.
    """

    class Meta:
        managed = False
        verbose_name = _("live connection")
        verbose_name_plural = _("live connections")
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
