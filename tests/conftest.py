"""Shared fixtures: the live daphne server, logged-in users, the Node client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.live import NodeDriver, ServerProcess

USERNAMES = ("alice", "bob", "carol")


@pytest.fixture
def live_users(transactional_db) -> dict[str, str]:
    """Users alice, bob and carol, each with a logged-in session; maps username -> Cookie header.

    The rows are committed (the live server reads the same SQLite file) and flushed after the test.
    """
    from django.contrib.auth import get_user_model

    cookies: dict[str, str] = {}
    user_model = get_user_model()
    for name in USERNAMES:
        user = user_model.objects.create_user(username=name, password=f"{name}-password")
        client = Client()
        client.force_login(user)
        cookies[name] = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return cookies


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """A daphne process serving tests.asgi on a free loopback port, sharing the test database."""
    log_path: Path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    server = ServerProcess(log_path, str(settings.DATABASES["default"]["NAME"]))
    yield server
    server.stop()


@pytest.fixture
def node() -> Iterator[NodeDriver]:
    """A Node process running the official @microsoft/signalr client."""
    driver = NodeDriver()
    yield driver
    driver.close()
