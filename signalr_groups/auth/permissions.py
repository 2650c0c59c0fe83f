"""Permission classes for hubs and hub methods, composable like Django REST framework's.

::

    class AdminHub(Hub):
        permission_classes = [IsAuthenticated]          # checked on connect and on every call

        @hub_method(permission_classes=[IsStaff | HasPermission("chat.moderate")])
        async def kick(self, connection_id: str) -> None: ...

Checks run in a worker thread against a user re-read from the database each time, so a
permission revoked in the admin, a user made inactive, or a staff flag removed takes effect on
the very next call of a long-lived connection (Django caches permissions on user objects).
A denied call fails with ``Failed to invoke 'X' because user is unauthorized`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth import get_user_model


class _Composable(type):
    """Lets permission *classes* be combined with ``&``, ``|`` and ``~`` (as in DRF)."""

    def __and__(cls, other: Any) -> BasePermission:
        return _And(as_permission(cls), as_permission(other))

    def __or__(cls, other: Any) -> BasePermission:  # type: ignore[override]
        return _Or(as_permission(cls), as_permission(other))

    def __invert__(cls) -> BasePermission:
        return _Not(as_permission(cls))


class BasePermission(metaclass=_Composable):
    """Subclass and override :meth:`has_permission`. Instances combine with ``&``, ``|``, ``~``."""

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        """Whether ``user`` may connect to ``hub`` (``method`` is None) or call ``method`` on it.

        Runs in a worker thread: the ORM may be used. ``user`` is freshly loaded from the database
        (or ``AnonymousUser``).
        """
        return True

    def __and__(self, other: Any) -> BasePermission:
        return _And(self, as_permission(other))

    def __or__(self, other: Any) -> BasePermission:
        return _Or(self, as_permission(other))

    def __invert__(self) -> BasePermission:
        return _Not(self)


class _And(BasePermission):
    def __init__(self, first: BasePermission, second: BasePermission) -> None:
        self.first, self.second = first, second

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return self.first.has_permission(user, hub, method) and self.second.has_permission(user, hub, method)


class _Or(BasePermission):
    def __init__(self, first: BasePermission, second: BasePermission) -> None:
        self.first, self.second = first, second

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return self.first.has_permission(user, hub, method) or self.second.has_permission(user, hub, method)


class _Not(BasePermission):
    def __init__(self, inner: BasePermission) -> None:
        self.inner = inner

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return not self.inner.has_permission(user, hub, method)


class AllowAny(BasePermission):
    """Everyone, anonymous users included."""


class IsAuthenticated(BasePermission):
    """Authenticated, active users (the ``[Authorize]`` of ASP.NET Core)."""

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


class IsStaff(BasePermission):
    """Active staff users."""

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return bool(IsAuthenticated().has_permission(user, hub, method) and getattr(user, "is_staff", False))


class HasPermission(BasePermission):
    """Users holding all of the given Django permissions, e.g. ``HasPermission("chat.moderate")``."""

    def __init__(self, *perms: object) -> None:
        if not perms or not all(isinstance(perm, str) and "." in perm for perm in perms):
            raise ValueError('HasPermission() takes permissions as "app_label.codename" strings.')
        self.perms = tuple(str(perm) for perm in perms)

    def has_permission(self, user: Any, hub: type[Any], method: str | None) -> bool:
        return bool(IsAuthenticated().has_permission(user, hub, method) and user.has_perms(self.perms))


def as_permission(value: Any) -> BasePermission:
    """Turn a permission class or instance into an instance."""
    if isinstance(value, BasePermission):
        return value
    if isinstance(value, type) and issubclass(value, BasePermission):
        return value()
    raise TypeError(f"{value!r} is not a permission class or instance (subclass BasePermission).")


def as_permissions(values: Iterable[Any]) -> tuple[BasePermission, ...]:
    """Turn a list of permission classes or instances into instances."""
    if isinstance(values, (str, bytes)):
        raise TypeError("permission_classes must be a list of permission classes, not a string.")
    return tuple(as_permission(value) for value in values)


def fresh_user(user: Any) -> Any:
    """Re-read ``user`` from the database (no cached permissions); ``AnonymousUser`` if gone or anonymous."""
    from django.contrib.auth.models import AnonymousUser  # not at import time: the app registry

    if user is None or not getattr(user, "is_authenticated", False):
        return AnonymousUser()
    user_model = get_user_model()
    fresh = user_model._default_manager.filter(pk=user.pk).first()
    return fresh if fresh is not None else AnonymousUser()


def check_permissions(permissions: Sequence[BasePermission], user: Any, hub: type[Any], method: str | None) -> bool:
    """Run every permission against a freshly loaded user (call from a worker thread)."""
    if not permissions:
        return True
    current = fresh_user(user)
    return all(permission.has_permission(current, hub, method) for permission in permissions)
