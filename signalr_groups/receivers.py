"""Signal receivers that end connections when the account behind them changes.

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
from django.db.models.signals import post_delete, post_save, pre_save

from signalr_groups.revocation import disconnect_user_on_commit

_OLD_STATE = "_signalr_groups_old_state"


def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is None or getattr(user, "pk", None) is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    disconnect_user_on_commit(user, reason="You have been logged out.", session_key=session_key)


def _remember_old_state(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    old = sender._default_manager.filter(pk=instance.pk).values_list("password", "is_active").first()
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
