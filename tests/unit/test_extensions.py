"""Features plug into the lifetime manager through extensions: join guards, hooks, layer handlers."""

from __future__ import annotations

from typing import Any

import pytest

from signalr_groups.exceptions import GroupAccessDeniedError
from signalr_groups.lifetime import extensions
from signalr_groups.lifetime.extensions import ManagerExtension, register_extension
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.registry import LocalConnection
from tests.fakes import FakeConnection

calls: list[tuple[str, Any]] = []


class Recorder(ManagerExtension):
    def layer_handlers(self):
        return {"test.echo": self._echo}

    async def _echo(self, message: dict[str, Any]) -> dict[str, Any]:
        calls.append(("echo", message["value"]))
        return {"value": message["value"]}

    async def before_join(self, connection: LocalConnection, group: str) -> None:
        calls.append(("before_join", group))
        if group == "closed":
            raise GroupAccessDeniedError("closed to everyone")

    def on_joined(self, connection_id: str, group: str) -> None:
        calls.append(("joined", group))

    def on_left(self, connection_id: str, group: str) -> None:
        calls.append(("left", group))

    async def on_registered(self, connection: LocalConnection) -> None:
        calls.append(("registered", connection.connection_id))

    def on_unregistered(self, connection: LocalConnection) -> None:
        calls.append(("unregistered", connection.connection_id))


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(extensions, "_extensions", [*extensions._extensions])
    register_extension(Recorder)
    calls.clear()
    yield
    calls.clear()


async def test_hooks_run_around_joins_leaves_and_registration(recorder):
    manager = HubLifetimeManager("extensions-hub", None)
    assert isinstance(manager.extension(Recorder), Recorder)
    connection = FakeConnection("c1", "alice", "1")
    await manager.connect(connection)
    await manager.run_registered_hooks(connection)
    assert await manager.add_local("c1", "open")
    assert await manager.add_local("c1", "open")  # already a member: no second before_join
    with pytest.raises(GroupAccessDeniedError):
        await manager.add_local("c1", "closed")
    assert not manager.registry.is_member("c1", "closed")
    assert await manager.remove_local("c1", "open")
    assert await manager.add_local("c1", "again")
    await manager.disconnect(connection)
    assert calls == [
        ("registered", "c1"),
        ("before_join", "open"),
        ("joined", "open"),
        ("before_join", "closed"),
        ("left", "open"),
        ("before_join", "again"),
        ("joined", "again"),
        ("left", "again"),
        ("unregistered", "c1"),
    ]


async def test_a_layer_handler_answers_through_the_one_reply_format(recorder):
    class Layer:
        sent: list[tuple[str, dict[str, Any]]] = []

        async def send(self, channel: str, message: dict[str, Any]) -> None:
            self.sent.append((channel, message))

    layer = Layer()
    manager = HubLifetimeManager("extensions-hub", None)
    manager.layer = layer  # only handle_layer_message's answer goes through it
    await manager.handle_layer_message({"type": "test.echo", "value": 7, "reply_to": "asker", "request_id": "r1"})
    await manager.handle_layer_message({"type": "test.echo", "value": 8})  # no reply_to: no answer
    await manager.handle_layer_message({"type": "test.unknown"})  # ignored
    assert calls == [("echo", 7), ("echo", 8)]
    [(channel, reply)] = layer.sent
    assert channel == "asker"
    assert reply["type"] == "signalr.reply" and reply["request_id"] == "r1"
    assert reply["body"] == {"value": 7} and reply["error"] is None


def test_only_extension_classes_register():
    with pytest.raises(TypeError):
        register_extension(object)  # type: ignore[arg-type]


async def test_a_user_scoped_add_skips_a_connection_at_its_group_limit():
    from django.test import override_settings

    from signalr_groups.user_groups import UserGroups

    with override_settings(SIGNALR_GROUPS={"MAX_GROUPS_PER_CONNECTION": 1}):
        manager = HubLifetimeManager("extensions-hub", None)
        full, free = FakeConnection("c1", "alice"), FakeConnection("c2", "alice")
        await manager.connect(full)
        await manager.connect(free)
        assert await manager.add_local("c1", "first")
        extension = manager.extension(UserGroups)
        assert extension is not None
        assert await extension.apply("alice", "team", "add") == 1  # c2 joined; c1 was skipped, not an error
        assert manager.registry.is_member("c2", "team") and not manager.registry.is_member("c1", "team")
        for connection in (full, free):
            await manager.disconnect(connection)
