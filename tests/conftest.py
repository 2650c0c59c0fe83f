"""Shared fixtures: the live daphne server, logged-in users, the Node client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.live import NodeDriver, ServerProcess

USERNAMES = ("alice", "bob", "carol")

#: The suite's parts: one folder each, and a marker of the same name (``pytest -m unit``).
PARTS = ("unit", "inprocess", "interop", "scaleout", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its part (the folder it is in), so ``-m`` can select parts."""
    for item in items:
        part = item.path.parent.name
        if part in PARTS:
            item.add_marker(getattr(pytest.mark, part))


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A redis-server on a free loopback port, stopped by its PID."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (scripts/test.sh installs it)"
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def redis_server_process(django_db_setup, redis_url, tmp_path_factory) -> Iterator[ServerProcess]:
    """A daphne process whose channel layer is Redis (pub/sub), shared with the test process."""
    log_path: Path = tmp_path_factory.mktemp("daphne-redis") / "daphne.log"
    server = ServerProcess(
        log_path, str(settings.DATABASES["default"]["NAME"]), extra_env={"SIGNALR_TEST_REDIS_URL": redis_url}
    )
    yield server
    server.stop()


@pytest.fixture
def redis_layer_settings(redis_url):
    """Point this process at the live server's Redis (as a second server process would): REDIS_URL."""
    from django.test import override_settings

    hub_settings = {**settings.SIGNALR_GROUPS, "REDIS_URL": redis_url, "REDIS_LAYER": "pubsub"}
    with override_settings(SIGNALR_GROUPS=hub_settings):
        yield hub_settings
