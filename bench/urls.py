"""HTTP routes of the bench servers: only the hub's negotiate (the HTTP transports need it; WebSocket clients skip it)."""

from __future__ import annotations

from django.urls import URLPattern

from bench.hubs import BenchHub
from signalr_groups.routing import negotiate_path

urlpatterns: list[URLPattern] = [negotiate_path("hub", BenchHub)]
