"""Who a send goes to: an :class:`Address`, and the channel-layer group that carries it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from signalr_groups.naming import layer_group_name

AddressKind = Literal["all", "connections", "groups", "users"]
KINDS: Final = ("all", "connections", "groups", "users")


@dataclass(frozen=True, slots=True)
class Address:
    """The recipients of one send: a kind, the names it selects, and connection ids to skip.

    ``all`` selects every connection of the hub, ``connections`` the given ids, ``groups`` the
    members of the named groups (each connection once), ``users`` every connection of the
    named users.
    """

    kind: AddressKind
    names: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()

    def to_wire(self) -> list[Any]:
        """Plain lists, so that channels-redis (msgpack) can carry the address."""
        return [self.kind, list(self.names), sorted(self.exclude)]

    @classmethod
    def from_wire(cls, value: Any) -> Address:
        """Rebuild an address from :meth:`to_wire`; raises ``ValueError`` on anything else."""
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError("bad address")
        kind, names, exclude = value
        if kind not in KINDS:
            raise ValueError(f"bad address kind {kind!r}")
        if not all(isinstance(name, str) for name in [*names, *exclude]):
            raise ValueError("address names must be strings")
        return cls(kind=kind, names=tuple(names), exclude=frozenset(exclude))

    def layer_group(self, hub_key: str) -> str:
        """The one channel-layer group whose member processes must see this send.

        A single group or user travels on its own layer group, so only processes with members
        get it. Everything else (all, connections, several groups or users) travels once to
        every process of the hub, which resolves it locally: one layer message per receiving
        process, and no duplicates for a connection in several of the named groups.
        """
        if self.kind == "groups" and len(self.names) == 1:
            return layer_group_name(hub_key, "group", self.names[0])
        if self.kind == "users" and len(self.names) == 1:
            return layer_group_name(hub_key, "user", self.names[0])
        return layer_group_name(hub_key, "all", "")
