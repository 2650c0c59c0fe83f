"""Settings for the test suite (and for the daphne subprocess the live tests start)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hubproject import settings as demo_settings

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "signalr_groups",
    "hubproject.chat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"
TEMPLATES = demo_settings.TEMPLATES

# One SQLite file shared by the test process and the daphne subprocess it starts.
_DB = os.environ.get("SIGNALR_TEST_DB") or str(
    Path(tempfile.gettempdir()) / f"signalr_groups_test_{os.getpid()}.sqlite3"
)
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB, "TEST": {"NAME": _DB}}}

CHANNEL_LAYERS: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
}
# Like the demo: users are addressed by username (clients.user("alice")). A live server started with
# SIGNALR_TEST_REDIS_URL scales out on that Redis through the one switch, REDIS_URL.
SIGNALR_GROUPS: dict[str, object] = {
    "USER_ID_PROVIDER": "signalr_groups.users.username_user_id",
    "REDIS_URL": os.environ.get("SIGNALR_TEST_REDIS_URL", ""),
    "REDIS_LAYER": os.environ.get("SIGNALR_TEST_REDIS_LAYER", "pubsub"),
    # SIGNALR_TEST_REDIS_SENTINELS ("host:port,host:port") reaches Redis through Sentinel instead.
    "REDIS_SENTINELS": [item for item in os.environ.get("SIGNALR_TEST_REDIS_SENTINELS", "").split(",") if item],
}
# A live server's extra settings, as JSON (e.g. {"DISCONNECT_TIMEOUT": 2}).
SIGNALR_GROUPS.update(json.loads(os.environ.get("SIGNALR_TEST_SETTINGS") or "{}"))

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "signalr_groups": {"handlers": ["console"], "level": os.environ.get("SIGNALR_TEST_LOG_LEVEL", "WARNING")}
    },
}
