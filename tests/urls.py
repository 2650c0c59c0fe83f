"""URLs of the test project."""

from __future__ import annotations

from django.urls import path

from hubproject.chat.hubs import ChatHub
from signalr_groups.routing import negotiate_path
from tests import views
from tests.hubs import InteropHub, OtherHub

urlpatterns = [
    negotiate_path("interop", InteropHub),
    negotiate_path("other", OtherHub),
    negotiate_path("chatHub", ChatHub),
    path("ctx/send", views.context_send),
    path("ctx/group", views.context_group),
]
