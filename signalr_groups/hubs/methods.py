"""``@hub_method``: which methods clients may invoke, under which wire names, with which arguments.

Only methods decorated with :func:`hub_method` can be invoked by clients. Their wire name is
the PascalCase form of the Python name (``send_message`` -> ``SendMessage``) or an explicit
``name=``, matched case-insensitively as ASP.NET Core does.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from signalr_groups.auth.permissions import BasePermission, as_permissions
from signalr_groups.naming import to_signalr_name

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute names under which @hub_method marks a function.
MARK = "_signalr_hub_method_name"
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
        setattr(function, MARK, name if isinstance(name, str) else to_signalr_name(function.__name__))
        setattr(function, _PERMISSIONS, permissions)
        return function

    if func is not None:
        return mark(func)
    return mark


def is_upload_stream(annotation: Any) -> bool:
    """Whether a parameter annotation asks for a client upload stream (``AsyncIterator[T]``/``AsyncIterable[T]``)."""
    base = typing.get_origin(annotation) or annotation
    return base in (AsyncIterator, AsyncIterable)


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
    #: Whether the method streams its results (an ``async def`` with ``yield``): a StreamInvocation calls it.
    is_stream: bool = False
    #: Positions (among all parameters after ``self``) of the client upload streams, in the order streams bind.
    stream_params: tuple[int, ...] = ()

    @classmethod
    def build(cls, python_name: str, function: Callable[..., Any], signalr_name: str) -> HubMethod:
        """Inspect ``function`` (an unbound method) and describe how to bind client arguments."""
        signature = inspect.signature(function)
        params = list(signature.parameters.values())[1:]  # drop self
        try:
            hints = typing.get_type_hints(function)
        except Exception:
            hints = {}
        if inspect.isgeneratorfunction(function):
            raise TypeError(
                f"Hub method {python_name!r} is a plain generator: a streaming hub method is an "
                "`async def` that yields."
            )
        min_args = 0
        max_args: int | None = 0
        checkers: list[Callable[[Any], bool] | None] = []
        stream_params: list[int] = []
        for position, param in enumerate(params):
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and is_upload_stream(
                hints.get(param.name, param.empty)
            ):
                stream_params.append(position)  # bound to a client stream, not to an argument
            elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
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
            is_async=inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function),
            min_args=min_args,
            max_args=max_args,
            checkers=tuple(checkers),
            permissions=getattr(function, _PERMISSIONS, ()),
            is_stream=inspect.isasyncgenfunction(function),
            stream_params=tuple(stream_params),
        )

    def bind(self, arguments: list[Any], streams: Sequence[Any]) -> list[Any]:
        """The call's positional arguments: the client's ``arguments`` with ``streams`` at their parameters' places."""
        if not self.stream_params:
            return list(arguments)
        bound: list[Any] = []
        values, uploads = list(arguments), list(streams)
        while values or uploads:
            if uploads and (len(bound) in self.stream_params or not values):
                bound.append(uploads.pop(0))
            else:
                bound.append(values.pop(0))
        return bound

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
