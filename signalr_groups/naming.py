"""Name mapping between Python and the SignalR wire, in one tested place."""

from __future__ import annotations

import functools
import hashlib
from typing import Final

#: Prefix of every channel-layer group this package creates.
LAYER_GROUP_PREFIX: Final = "sgr"


def to_signalr_name(python_name: str) -> str:
    """Return the SignalR name of a Python method: ``send_message`` -> ``SendMessage``."""
    parts = [part for part in python_name.split("_") if part]
    return "".join(part[:1].upper() + part[1:] for part in parts)


def lookup_key(name: str) -> str:
    """Return the key hub methods are matched by: case-insensitive, like ASP.NET Core's dispatcher."""
    return name.lower()


@functools.lru_cache(maxsize=8192)
def layer_group_name(hub_key: str, kind: str, name: str) -> str:
    """Map a (hub, kind, name) triple to a valid channel-layer group name.

    Channel-layer group names must be ASCII ``[A-Za-z0-9._-]`` and shorter than 100
    characters, while SignalR group names and user ids are arbitrary strings. The digest
    keeps distinct names distinct, scopes them per hub, and keeps the internal kinds
    (``all``, ``user``) apart from the ``group`` kind that clients can name. Cached: every send
    to a group or user needs it, often twice.
    """
    digest = hashlib.sha256("\0".join((hub_key, kind, name)).encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{LAYER_GROUP_PREFIX}.{kind}.{digest}"
