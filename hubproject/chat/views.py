"""Views of the demo chat site."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    """The chat page (the ASP.NET Core docs' groups sample, with the official browser client)."""
    return render(request, "chat/index.html")
