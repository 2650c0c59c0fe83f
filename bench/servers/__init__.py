"""The servers under test that are not Django: raw websockets and python-socketio."""

from __future__ import annotations
