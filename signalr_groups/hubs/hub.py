"""The Hub base class.

Subclass it and mark the methods clients may call with :func:`~signalr_groups.hubs.methods.hub_method`.
A hub instance is created for each invocation and lifecycle event, so keep per-connection state
in ``self.context.items``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from signalr_groups.access.grants import is_restricted
from signalr_groups.auth.permissions import BasePermission, as_permissions
from signalr_groups.conf import get_hub_settings
from signalr_groups.hubs.filters import as_filters
from signalr_groups.hubs.methods import MARK, HubMethod
from signalr_groups.naming import lookup_key

if TYPE_CHECKING:
    from signalr_groups.hubs.caller_context import HubCallerContext
    from signalr_groups.hubs.clients import HubCallerClients
    from signalr_groups.hubs.groups import GroupManager


class Hub:
    """Base class of hubs: subclass it and mark client-callable methods with :func:`~signalr_groups.hubs.methods.hub_method`.

    During an invocation or a lifecycle event the instance has:

    - ``context``: the caller (:class:`~signalr_groups.hubs.caller_context.HubCallerContext`),
    - ``clients``: :class:`~signalr_groups.hubs.clients.HubCallerClients` (``all``, ``caller``,
      ``others``, ``group(name)``, ``user(id)``, ...),
    - ``groups``: :class:`~signalr_groups.hubs.groups.GroupManager` (``add_to_group``,
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
    #: This hub's filters (instances, or classes made once), run after ``HUB_FILTERS``: see
    #: :mod:`signalr_groups.hubs.filters`.
    filters: ClassVar[Sequence[Any]] = ()
    _filter_instances: ClassVar[tuple[Any, ...]] = ()

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
                signalr_name = getattr(value, MARK, None)
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
        cls._filter_instances = as_filters(cls.filters, f"{cls.__qualname__}.filters")

    @classmethod
    def hub_key(cls) -> str:
        """The name that scopes this hub's groups and users: ``hub_name`` or the import path."""
        return cls.hub_name or f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def hub_permissions(cls) -> tuple[BasePermission, ...]:
        """The hub-level permissions: ``permission_classes`` or the ``DEFAULT_PERMISSION_CLASSES`` setting."""
        if cls.permission_classes is None:
            return as_permissions(get_hub_settings().default_permission_classes)
        return as_permissions(cls.permission_classes)

    @classmethod
    def hub_filters(cls) -> tuple[Any, ...]:
        """The filters around this hub's calls: ``HUB_FILTERS``, then the hub's own ``filters``."""
        global_filters = get_hub_settings().hub_filters
        if not global_filters:
            return cls._filter_instances
        return (*global_filters, *cls._filter_instances)

    @classmethod
    def is_restricted(cls, group: str) -> bool:
        """Whether joining ``group`` needs a grant."""
        return is_restricted(cls.restricted_groups, group)

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
