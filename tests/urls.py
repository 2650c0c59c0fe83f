"""URLs of the test project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from hubproject.chat.hubs import ChatHub
from signalr_groups.routing import access_token_path, health_paths, metrics_path, negotiate_path
from tests import views
from tests.hubs import InteropHub, OtherHub, ProtectedHub

urlpatterns = [
    path("admin/", admin.site.urls),
    negotiate_path("interop", InteropHub),
    negotiate_path("other", OtherHub),
    negotiate_path("chatHub", ChatHub),
    negotiate_path("protected", ProtectedHub),
    access_token_path("signalr/token"),
    metrics_path(),
    *health_paths(),
    path("ctx/send", views.context_send),
    path("ctx/ask", views.context_ask),
    path("ctx/group", views.context_group),
    path("test/logout", views.logout_view),
    path("test/account", views.account_action),
    path("test/grant", views.grant_action),
    path("test/slow", views.slow_view),
]
