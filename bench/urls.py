"""No HTTP routes: the bench clients skip negotiation and open the WebSocket directly."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
