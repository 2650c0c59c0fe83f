"""``path("", include("signalr_groups.urls"))``: the access-token view, the metrics and the health endpoints.

``signalr/token``, ``signalr/metrics``, ``signalr/health/ready`` and ``signalr/health/live``. Hubs'
negotiate URLs are the project's own (:func:`signalr_groups.routing.negotiate_path`).
"""

from __future__ import annotations

from signalr_groups.routing import access_token_path, health_paths, metrics_path

urlpatterns = [access_token_path(), metrics_path(), *health_paths()]
