"""Client proxies: ``clients.all``, ``clients.group(name)``, ``clients.user(id)`` ... ``.send(target, *args)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from signalr_groups.addressing import Address
from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.sending import invoke_client, send
from signalr_groups.validation import check_group_name, check_ids


class ClientProxy:
    """A set of recipients; ``await proxy.send("Target", *args)`` invokes ``Target`` on each of them."""

    __slots__ = ("_address", "_hub_key")

    def __init__(self, hub_key: str, address: Address) -> None:
        self._hub_key = hub_key
        self._address = address

    @property
    def address(self) -> Address:
        """Who this proxy sends to."""
        return self._address

    async def send(self, target: str, *args: Any) -> None:
        """Invoke client method ``target`` with ``args`` on every recipient (fire and forget).

        Raises :class:`~signalr_groups.exceptions.PayloadError` if ``args`` cannot be encoded as JSON.
        """
        await send(self._hub_key, self._address, target, args)

    async def invoke(self, target: str, *args: Any, timeout: float | None = None) -> Any:
        """Invoke client method ``target`` on this one connection and return the client's result.

        Only for one connection (``clients.client(id)``, ``clients.caller``), on any server process.
        Waits up to ``timeout`` seconds (``CLIENT_RESULT_TIMEOUT`` by default); raises
        :class:`~signalr_groups.exceptions.ClientResultError` when the client answers with an error,
        :class:`~signalr_groups.exceptions.ClientResultTimeoutError`, or
        :class:`~signalr_groups.exceptions.ClientGoneError` when it disconnects first.
        """
        address = self._address
        if address.kind != "connections" or len(address.names) != 1 or address.exclude:
            raise TypeError("invoke() needs exactly one connection: clients.client(id) or clients.caller.")
        wait = get_hub_settings().client_result_timeout if timeout is None else timeout
        return await invoke_client(self._hub_key, address.names[0], target, list(args), wait)


class HubClients:
    """Recipients reachable from anywhere (the ``IHubClients`` analogue)."""

    def __init__(self, hub_key: str) -> None:
        self._hub_key = hub_key

    def _proxy(self, address: Address) -> ClientProxy:
        return ClientProxy(self._hub_key, address)

    @property
    def all(self) -> ClientProxy:
        """Every connection of the hub, on every server."""
        return self._proxy(Address("all"))

    def all_except(self, excluded_connection_ids: Iterable[str]) -> ClientProxy:
        """Every connection except the given ids."""
        return self._proxy(Address("all", exclude=frozenset(check_ids(excluded_connection_ids, "connection id"))))

    def client(self, connection_id: str) -> ClientProxy:
        """One connection, by id."""
        return self._proxy(Address("connections", check_ids([connection_id], "connection id")))

    def clients(self, connection_ids: Iterable[str]) -> ClientProxy:
        """Several connections, by id."""
        return self._proxy(Address("connections", check_ids(connection_ids, "connection id")))

    def group(self, group_name: str) -> ClientProxy:
        """Every member of a group."""
        return self._proxy(Address("groups", (check_group_name(group_name),)))

    def groups(self, group_names: Iterable[str]) -> ClientProxy:
        """Every member of any of the groups, each connection once."""
        names = check_ids(group_names, "group name")
        return self._proxy(Address("groups", tuple(check_group_name(name) for name in names)))

    def group_except(self, group_name: str, excluded_connection_ids: Iterable[str]) -> ClientProxy:
        """Every member of a group except the given connection ids."""
        return self._proxy(
            Address(
                "groups",
                (check_group_name(group_name),),
                frozenset(check_ids(excluded_connection_ids, "connection id")),
            )
        )

    def user(self, user_id: str) -> ClientProxy:
        """Every connection (every device) of one user, by user identifier."""
        return self._proxy(Address("users", check_ids([user_id], "user id")))

    def users(self, user_ids: Iterable[str]) -> ClientProxy:
        """Every connection of each of the users."""
        return self._proxy(Address("users", check_ids(user_ids, "user id")))


class HubCallerClients(HubClients):
    """Recipients seen from inside a hub method: adds ``caller``, ``others`` and ``others_in_group``."""

    def __init__(self, hub_key: str, connection_id: str) -> None:
        super().__init__(hub_key)
        self._connection_id = connection_id

    @property
    def caller(self) -> ClientProxy:
        """The connection that invoked the hub method."""
        return self._proxy(Address("connections", (self._connection_id,)))

    @property
    def others(self) -> ClientProxy:
        """Every connection except the caller."""
        return self._proxy(Address("all", exclude=frozenset((self._connection_id,))))

    def others_in_group(self, group_name: str) -> ClientProxy:
        """Every member of a group except the caller."""
        return self._proxy(Address("groups", (check_group_name(group_name),), frozenset((self._connection_id,))))
