"""The Hub programming model: which methods are exposed, under which names, with which arguments."""

from __future__ import annotations

from typing import Any

import pytest

from signalr_groups import Hub, get_hub_context, hub_method
from signalr_groups.naming import layer_group_name, lookup_key, to_signalr_name
from signalr_groups.users import default_user_id, username_user_id
from tests.hubs import InteropHub, OtherHub


@pytest.mark.parametrize(
    ("python", "wire"),
    [("send_message", "SendMessage"), ("echo", "Echo"), ("add_to_group", "AddToGroup"), ("get_id2", "GetId2")],
)
def test_python_names_become_pascal_case(python, wire):
    assert to_signalr_name(python) == wire


def test_only_decorated_methods_are_exposed():
    assert InteropHub.find_method("Echo") is not None
    assert InteropHub.find_method("echo") is InteropHub.find_method("ECHO")
    assert InteropHub.find_method("NotExposed") is None
    assert InteropHub.find_method("OnConnected") is None
    assert InteropHub.find_method("Renamed") is not None
    assert InteropHub.find_method("MethodWithExplicitName") is None


def test_subclasses_inherit_methods():
    class Child(InteropHub):
        @hub_method
        async def extra(self) -> int:
            return 1

    assert Child.find_method("Echo") is not None and Child.find_method("Extra") is not None
    assert InteropHub.find_method("Extra") is None


def test_names_that_collide_case_insensitively_are_refused():
    with pytest.raises(TypeError, match="both answer to"):

        class Clash(Hub):
            @hub_method
            async def send(self) -> None: ...

            @hub_method(name="SEND")
            async def other(self) -> None: ...


def test_required_keyword_only_parameters_are_refused():
    with pytest.raises(TypeError, match="keyword-only"):

        class Bad(Hub):
            @hub_method
            async def method(self, *, needed: int) -> None: ...


def test_empty_explicit_name_is_refused():
    with pytest.raises(TypeError):
        hub_method(name="")


def test_argument_binding():
    class Binding(Hub):
        @hub_method
        async def fixed(self, a: int, b: str) -> None: ...

        @hub_method
        async def optional(self, a: float, b: bool | None = None) -> None: ...

        @hub_method
        async def variadic(self, first: Any, *rest: Any) -> None: ...

        @hub_method
        async def containers(self, items: list[str], mapping: dict[str, Any]) -> None: ...

    fixed = Binding.find_method("Fixed")
    assert fixed is not None
    assert fixed.binding_error([1, "x"]) is None
    assert "provides 1 argument(s) but target expects 2" in (fixed.binding_error([1]) or "")
    assert fixed.binding_error([True, "x"]) is not None  # a bool is not an int
    assert fixed.binding_error([1, 2]) is not None
    optional = Binding.find_method("Optional")
    assert optional is not None
    assert optional.binding_error([1]) is None and optional.binding_error([1.5, None]) is None
    assert optional.binding_error([1, "no"]) is not None
    assert optional.binding_error([]) is not None and optional.binding_error([1, True, 3]) is not None
    variadic = Binding.find_method("Variadic")
    assert variadic is not None
    assert variadic.binding_error([1, 2, 3, 4]) is None and variadic.binding_error([]) is not None
    containers = Binding.find_method("Containers")
    assert containers is not None
    assert containers.binding_error([["a"], {}]) is None and containers.binding_error([{}, []]) is not None


def test_hub_keys_scope_groups_per_hub():
    assert InteropHub.hub_key() == "interop" and OtherHub.hub_key() == "other"

    class Unnamed(Hub):
        pass

    assert Unnamed.hub_key().endswith("Unnamed")
    assert layer_group_name("interop", "group", "x") != layer_group_name("other", "group", "x")
    assert layer_group_name("interop", "group", "x") != layer_group_name("interop", "user", "x")
    assert lookup_key("SendMessage") == lookup_key("sendMessage")


def test_get_hub_context_needs_a_hub():
    with pytest.raises(TypeError):
        get_hub_context(object)
    assert get_hub_context(InteropHub).hub is InteropHub


@pytest.mark.django_db
def test_user_id_providers(django_user_model):
    from django.contrib.auth.models import AnonymousUser

    user = django_user_model.objects.create_user(username="dora", password="x")
    assert default_user_id(user, {}) == str(user.pk)
    assert username_user_id(user, {}) == "dora"
    assert default_user_id(AnonymousUser(), {}) is None and username_user_id(None, {}) is None
