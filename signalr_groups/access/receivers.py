"""Signal receivers: connections end when the account behind them changes, memberships when grants do.

| event | connections closed | Close error |
|---|---|---|
| ``user_logged_out`` | those of that browser session | "You have been logged out." |
| session row deleted (logout, ``clearsessions``, admin) | those of that session | "Your session has ended." |
| password changed | all of the user's | "Your password was changed." |
| ``is_active`` set to False | all of the user's | "Your account was deactivated." |
| user deleted | all of the user's | "Your account was deleted." |

Each closes with ``allowReconnect: false`` once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from signalr_groups.access.audit import record_revocations, usernames
from signalr_groups.access.grant_changes import group_access_changed_on_commit
from signalr_groups.access.revocation import disconnect_user_on_commit
from signalr_groups.models import GroupGrant, grants_updated

_OLD_STATE = "_signalr_groups_old_state"


def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is None or getattr(user, "pk", None) is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    disconnect_user_on_commit(user, reason="You have been logged out.", session_key=session_key)


def _has_field(model: Any, name: str) -> bool:
    try:
        model._meta.get_field(name)
    except Exception:
        return False
    return True


def _remember_old_state(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    fields = ["password"] + (["is_active"] if _has_field(sender, "is_active") else [])
    row = sender._default_manager.filter(pk=instance.pk).values_list(*fields).first()
    old = None if row is None else (row[0], row[1] if len(row) > 1 else True)
    setattr(instance, _OLD_STATE, old)


def _on_user_saved(sender: Any, instance: Any, created: bool = False, raw: bool = False, **kwargs: Any) -> None:
    old = getattr(instance, _OLD_STATE, None)
    if raw or created or old is None:
        return
    setattr(instance, _OLD_STATE, None)
    old_password, old_active = old
    if old_active and not getattr(instance, "is_active", True):
        disconnect_user_on_commit(instance, reason="Your account was deactivated.")
    elif old_password != instance.password:
        disconnect_user_on_commit(instance, reason="Your password was changed.")


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    disconnect_user_on_commit(instance.pk, reason="Your account was deleted.")


def _on_session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    try:
        account = instance.get_decoded().get("_auth_user_id")
    except Exception:
        return
    if account is not None:
        disconnect_user_on_commit(account, reason="Your session has ended.", session_key=instance.session_key)


def connect_receivers() -> None:
    """Connect the receivers (called from ``AppConfig.ready``)."""
    user_model = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid="signalr_groups.logged_out")
    pre_save.connect(_remember_old_state, sender=user_model, dispatch_uid="signalr_groups.user_pre_save")
    post_save.connect(_on_user_saved, sender=user_model, dispatch_uid="signalr_groups.user_post_save")
    post_delete.connect(_on_user_deleted, sender=user_model, dispatch_uid="signalr_groups.user_deleted")
    try:
        from django.contrib.sessions.models import Session
    except RuntimeError:  # django.contrib.sessions is not installed
        return
    post_delete.connect(_on_session_deleted, sender=Session, dispatch_uid="signalr_groups.session_deleted")


def connect_all() -> None:
    """Connect every receiver of the app."""
    connect_receivers()
    connect_grant_receivers()


# ---------------------------------------------------------------- group access grants

_GRANT_OLD = "_signalr_groups_old_grant"
_GRANT_HOLDERS = "_signalr_groups_holders"


def _holders(grant: Any) -> set[str]:
    """The pks of the users a grant applies to (the user, or the auth group's members)."""
    if grant.user_id is not None:
        return {str(grant.user_id)}
    if grant.auth_group_id is not None:
        user_model = get_user_model()
        return {
            str(pk)
            for pk in user_model._default_manager.filter(groups=grant.auth_group_id).values_list("pk", flat=True)
        }
    return set()


def _record(grant: Any, accounts: set[str], cause: str, reason: str = "", by: Any = None) -> None:
    by_pk = by.pk if getattr(by, "is_authenticated", False) else None
    names = getattr(grant, "_signalr_groups_names", None)
    record_revocations(grant.hub, grant.group, accounts, cause, reason, by_pk, names)


def _grant_changed(old: Any, new: Any, accounts: set[str], by: Any) -> None:
    """A grant was saved or bulk-updated (``new`` None: updated away): audit a revocation, re-check the holders."""
    if new is not None and old is not None and old.revoked_at is None and new.revoked_at is not None:
        _record(new, _holders(new), "revoked", new.revoke_reason, by)
        cause = "revoked"
    elif new is not None and not new.is_active():
        cause = "revoked" if new.revoked_at is not None else "expired"
    else:
        cause = "changed"
    hubs = {grant.hub for grant in (old, new) if grant is not None}
    for hub in hubs:
        group_access_changed_on_commit(accounts, hub, cause)


def _grant_pre_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).first()
    setattr(instance, _GRANT_OLD, old)
    if old is not None:
        setattr(instance, _GRANT_HOLDERS, _holders(old))


def _grant_post_save(sender: Any, instance: Any, created: bool = False, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    old = getattr(instance, _GRANT_OLD, None)
    accounts = _holders(instance) | getattr(instance, _GRANT_HOLDERS, set())
    setattr(instance, _GRANT_OLD, None)
    _grant_changed(old, instance, accounts, instance.revoked_by)


def _grants_updated(sender: Any, before: list[Any], after: Any, **kwargs: Any) -> None:
    """After ``GroupGrant.objects.filter(...).update(...)``: re-check old and new holders of each grant."""
    now_by_pk = {grant.pk: grant for grant in after}
    for old in before:
        new = now_by_pk.get(old.pk)
        accounts = _holders(old) | (_holders(new) if new is not None else set())
        _grant_changed(old, new, accounts, None)


def _grant_pre_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    holders = _holders(instance)
    setattr(instance, _GRANT_HOLDERS, holders)
    # A cascade from deleting the user removes the user row before post_delete: keep the names now.
    instance._signalr_groups_names = usernames(holders) if holders else {}


def _grant_post_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    accounts: set[str] = getattr(instance, _GRANT_HOLDERS, set())
    if instance.is_active():
        _record(instance, accounts, "deleted")
    group_access_changed_on_commit(accounts, instance.hub, "deleted")


def _auth_groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
    """A user left auth groups (``user.groups.remove``) or auth groups lost users (``group.user_set.remove``)."""
    if action == "pre_clear":
        members = instance.user_set.all() if reverse else instance.groups.all()
        instance._signalr_groups_cleared = {obj.pk for obj in members}
        return
    if action not in ("post_remove", "post_clear"):
        return
    removed = set(pk_set or ()) if action == "post_remove" else getattr(instance, "_signalr_groups_cleared", set())
    if not removed:
        return
    if reverse:  # instance is an auth Group, removed holds user pks
        group_ids, accounts = {instance.pk}, {str(pk) for pk in removed}
    else:  # instance is a user, removed holds auth group pks
        group_ids, accounts = set(removed), {str(instance.pk)}
    grants = list(GroupGrant.objects.active().filter(auth_group__in=group_ids))
    for grant in grants:
        _record(grant, accounts, "auth-group-left")
    for hub in {grant.hub for grant in grants}:
        group_access_changed_on_commit(accounts, hub, "auth-group-left")


def connect_grant_receivers() -> None:
    """Connect the receivers that keep group memberships true to the grants."""
    pre_save.connect(_grant_pre_save, sender=GroupGrant, dispatch_uid="signalr_groups.grant_pre_save")
    post_save.connect(_grant_post_save, sender=GroupGrant, dispatch_uid="signalr_groups.grant_post_save")
    pre_delete.connect(_grant_pre_delete, sender=GroupGrant, dispatch_uid="signalr_groups.grant_pre_delete")
    post_delete.connect(_grant_post_delete, sender=GroupGrant, dispatch_uid="signalr_groups.grant_post_delete")
    grants_updated.connect(_grants_updated, sender=GroupGrant, dispatch_uid="signalr_groups.grants_updated")
    user_model = get_user_model()
    if _has_field(user_model, "groups"):  # PermissionsMixin; custom users without it have no auth groups
        through = user_model.groups.through
        m2m_changed.connect(_auth_groups_changed, sender=through, dispatch_uid="signalr_groups.auth_groups_changed")
