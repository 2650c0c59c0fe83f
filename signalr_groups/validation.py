"""Checks of names that callers pass in: group names and id lists."""

from __future__ import annotations

from collections.abc import Iterable

from signalr_groups.conf import get_hub_settings
from signalr_groups.exceptions import InvalidGroupNameError


def check_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidGroupNameError`.

    Group names are any non-empty string up to ``MAX_GROUP_NAME_LENGTH`` characters (default
    256): Unicode, spaces and punctuation included, compared exactly (case-sensitive, no
    Unicode normalisation).
    """
    if not isinstance(name, str):
        raise InvalidGroupNameError(f"A group name must be a string, not {type(name).__name__}.")
    if not name:
        raise InvalidGroupNameError("A group name must not be empty.")
    limit = get_hub_settings().max_group_name_length
    if len(name) > limit:
        raise InvalidGroupNameError(f"A group name must be at most {limit} characters long (got {len(name)}).")
    return name


def check_ids(values: Iterable[object], what: str) -> tuple[str, ...]:
    """Return ``values`` as a tuple of strings, or raise ``TypeError`` naming ``what``."""
    if isinstance(values, str):
        raise TypeError(f"Expected a list of {what}s, got a single string {values!r}.")
    result: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"A {what} must be a string, not {type(value).__name__}.")
        result.append(value)
    return tuple(result)


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a non-empty string, else raise ``TypeError``."""
    if not isinstance(user_id, str) or not user_id:
        raise TypeError(f"A user identifier must be a non-empty string, not {user_id!r}.")
    return user_id
