"""The demo chat app."""

from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Demo chat rooms built on :class:`hubproject.chat.hubs.ChatHub`."""

    name = "hubproject.chat"
    label = "chat"
    default_auto_field = "django.db.models.BigAutoField"
