"""HTTP routes of the demo project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from hubproject.chat import views
from hubproject.chat.hubs import ChatHub
from signalr_groups.routing import health_paths, metrics_path, negotiate_path

urlpatterns = [
    path("", views.index, name="index"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("sample/", views.docs_sample, name="docs-sample"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    negotiate_path("chatHub", ChatHub),
    metrics_path(),
    *health_paths(),
]
