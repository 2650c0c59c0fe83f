"""The Hub base class and the ``@hub_method`` opt-in.

Only methods decorated with :func:`hub_method` can be invoked by clients. Their wire name is
the PascalCase form of the Python name (``send_message`` -> ``SendMessage``) or an explicit
``name=``, matched case-insensitively as ASP.NET Core does. A hub instance is created for each
invocation and lifecycle event, so keep per-connection state in ``self.context.items``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from signalr_groups.naming import lookup_key, to_signalr_name
from signalr_groups.permissions import BasePermission, as_permissions

if TYPE_CHECKING:
    from signalr_groups.clients import HubCallerClients
    from signalr_groups.context import HubCallerContext
    from signalr_groups.groups import GroupManager

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_signalr_hub_method_name"
_PERMISSIONS = "_signalr_hub_method_permissions"


@overload
def hub_method(func: F) -> F: ...
@overload
def hub_method(*, name: object = None, permission_classes: Sequence[Any] = ()) -> Callable[[F], F]: ...
def hub_method(
    func: F | None = None, *, name: object = None, permission_classes: Sequence[Any] = ()
) -> F | Callable[[F], F]:
    """Expose a hub method to clients, under ``name`` or the PascalCase form of its Python name.

    Use it bare (``@hub_method``) or with options (``@hub_method(name="Send",
    permission_classes=[IsStaff])``). Method permissions add to the hub's own. The method may be
    ``async def`` or a plain ``def``; plain ones run in a worker thread, where the ORM is safe.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError("hub_method(name=...) must be a non-empty string.")
    permissions = as_permissions(permission_classes)

    def mark(function: F) -> F:
        setattr(function, _MARK, name if isinstance(name, str) else to_signalr_name(function.__name__))
        setattr(function, _PERMISSIONS, permissions)
        return function

    if func is not None:
        return mark(func)
    return mark


def _checker(annotation: Any) -> Callable[[Any], bool] | None:
    """Return a validator for simple annotations (str, int, float, bool, list, dict, X | None)."""
    if annotation is Any or annotation is object or annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        checks = [_checker(arg) for arg in typing.get_args(annotation)]
        if any(check is None for check in checks):
            return None
        return lambda value: any(check(value) for check in checks if check is not None)
    if annotation is type(None):
        return lambda value: value is None
    base = origin or annotation
    if base is bool:
        return lambda value: isinstance(value, bool)
    if base is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    if base in (str, list, dict):
        return lambda value: isinstance(value, base)
    return None


@dataclass(frozen=True, slots=True)
class HubMethod:
    """A client-invocable method: its names, its function, and how its arguments are checked."""

    signalr_name: str
    python_name: str
    is_async: bool
    min_args: int
    max_args: int | None
    checkers: tuple[Callable[[Any], bool] | None, ...]
    permissions: tuple[BasePermission, ...] = ()

    @classmethod
    def build(cls, python_name: str, function: Callable[..., Any], signalr_name: str) -> HubMethod:
        """Inspect ``function`` (an unbound method) and describe how to bind client arguments."""
        signature = inspect.signature(function)
        params = list(signature.parameters.values())[1:]  # drop self
        try:
            hints = typing.get_type_hints(function)
        except Exception:
            hints = {}
        min_args = 0
        max_args: int | None = 0
        checkers: list[Callable[[Any], bool] | None] = []
        for param in params:
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                if param.default is param.empty:
                    min_args += 1
                max_args = None if max_args is None else max_args + 1
                checkers.append(_checker(hints.get(param.name, param.empty)))
            elif param.kind is param.VAR_POSITIONAL:
                max_args = None
            elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
                raise TypeError(
                    f"Hub method {python_name!r} has a required keyword-only parameter {param.name!r}; "
                    "clients send positional arguments only."
                )
        return cls(
            signalr_name=signalr_name,
            python_name=python_name,
            is_async=inspect.iscoroutinefunction(function),
            min_args=min_args,
            max_args=max_args,
            checkers=tuple(checkers),
            permissions=getattr(function, _PERMISSIONS, ()),
        )

    def binding_error(self, arguments: list[Any]) -> str | None:
        """Return why ``arguments`` do not fit this method, or ``None`` when they do."""
        count = len(arguments)
        if count < self.min_args or (self.max_args is not None and count > self.max_args):
            expected = str(self.min_args) if self.min_args == self.max_args else f"{self.min_args} or more"
            if self.max_args is not None and self.max_args != self.min_args:
                expected = f"{self.min_args} to {self.max_args}"
            return f"Invocation provides {count} argument(s) but target expects {expected}."
        for index, (value, check) in enumerate(zip(arguments, self.checkers, strict=False)):
            if check is not None and not check(value):
                return f"Argument {index} has the wrong type ({type(value).__name__})."
        return None


class Hub:
    """Base class of hubs: subclass it and mark client-callable methods with :func:`hub_method`.

    During an invocation or a lifecycle event the instance has:

    - ``context``: the caller (:class:`~signalr_groups.context.HubCallerContext`),
    - ``clients``: :class:`~signalr_groups.clients.HubCallerClients` (``all``, ``caller``,
      ``others``, ``group(name)``, ``user(id)``, ...),
    - ``groups``: :class:`~signalr_groups.groups.GroupManager` (``add_to_group``,
      ``remove_from_group``).

    Set ``hub_name`` to keep group and user addresses stable if the class moves; by default
    they are scoped by the class's import path.
    """

    hub_name: ClassVar[str | None] = None
    hub_methods: ClassVar[dict[str, HubMethod]] = {}
    #: Checked on negotiate, on connect and on every invocation; ``None`` means the
    #: ``DEFAULT_PERMISSION_CLASSES`` setting (everyone, by default).
    permission_classes: ClassVar[Sequence[Any] | None] = None
    #: Groups that need a :class:`~signalr_groups.models.GroupGrant` to join: exact names, or
    #: prefixes ending in ``*`` (``"*"`` restricts every group). All other groups are open.
    restricted_groups: ClassVar[Sequence[str]] = ()

    context: HubCallerContext
    clients: HubCallerClients
    groups: GroupManager

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, HubMethod] = {}
        seen: set[str] = set()
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                signalr_name = getattr(value, _MARK, None)
                if signalr_name is None:
                    continue
                method = HubMethod.build(attr, value, signalr_name)
                key = lookup_key(signalr_name)
                if key in methods:
                    raise TypeError(
                        f"{cls.__qualname__}: hub methods {methods[key].python_name!r} and {attr!r} "
                        f"both answer to {signalr_name!r} (names match case-insensitively)."
                    )
                methods[key] = method
        cls.hub_methods = methods

    @classmethod
    def hub_key(cls) -> str:
        """The name that scopes this hub's groups and users: ``hub_name`` or the import path."""
        return cls.hub_name or f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def hub_permissions(cls) -> tuple[BasePermission, ...]:
        """The hub-level permissions: ``permission_classes`` or the ``DEFAULT_PERMISSION_CLASSES`` setting."""
        if cls.permission_classes is None:
            from signalr_groups.conf import get_hub_settings

            return as_permissions(get_hub_settings().default_permission_classes)
        return as_permissions(cls.permission_classes)

    @classmethod
    def is_restricted(cls, group: str) -> bool:
        """Whether joining ``group`` needs a grant."""
        from signalr_groups.models import grant_matches

        return any(grant_matches(pattern, group) for pattern in cls.restricted_groups)

    @classmethod
    def find_method(cls, name: str) -> HubMethod | None:
        """Look up a client-invocable method by its wire name, case-insensitively."""
        return cls.hub_methods.get(lookup_key(name))

    async def on_connected(self) -> None:
        """Called after the handshake; raising here closes the connection without reconnect."""

    async def on_disconnected(self, exception: BaseException | None) -> None:
        """Called when the connection ends, while it is still in its groups; ``exception`` is ``None`` for a clean close."""

    async def on_group_access_revoked(self, group: str, reason: str) -> None:
        """Called after this connection was taken out of a restricted group (grant revoked, deleted or expired).

        The client has already been sent ``GroupAccessRevoked(group, reason)``; override this to
        tell the group's other members, for instance.
        """
