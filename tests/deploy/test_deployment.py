"""The deployment in deploy/, run as written: nginx (TLS, the site file rendered from the template) in front of
two app processes started by the systemd unit's own ExecStart line, on one Redis, with the demo's production
settings. The official client and the chat site in Chromium work through it; ``check --deploy`` is clean.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from deploy.render import render
from tests.demo_site import CHROMIUM_ARGS, chromium_path, log_in, open_room
from tests.live import NodeDriver, free_port, stop_process

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "deploy" / "signalr-groups@.service"


@dataclass
class Deployment:
    """The running deployment: nginx's URL, the app processes and their ports."""

    url: str
    env: dict[str, str]
    app_ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        """Run manage.py with the production environment."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr


def unit_command(port: int) -> list[str]:
    """The unit's ExecStart for one instance, with this checkout's virtualenv in place of /srv/mysite/.venv."""
    line = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    command = line.removeprefix("ExecStart=").replace("%i", str(port))
    command = command.replace("/srv/mysite/.venv/bin/", str(Path(sys.executable).parent) + "/")
    return shlex.split(command)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} did not open:\n{log.read_text()}")


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def deployment(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Everything of deploy/ started on free loopback ports; stopped by PID afterwards."""
    work = tmp_path_factory.mktemp("deployment")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hubproject.settings_production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "DJANGO_STATIC_ROOT": str(work / "static"),
        "SIGNALR_REDIS_URL": redis_url,
        "DEMO_DB_PATH": str(work / "db.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    deployment = Deployment(url=f"https://127.0.0.1:{port}", env=env, app_ports=[free_port(), free_port()])
    deployment.manage("migrate", "--verbosity", "0")
    deployment.manage("seed_demo", "--force")  # (DEBUG is off: the command asks to be sure)
    deployment.manage("collectstatic", "--noinput", "--verbosity", "0")
    nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx_binary).exists(), "nginx is required (scripts/test.sh installs it)"
    try:
        for app_port in deployment.app_ports:
            log = work / f"app-{app_port}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    unit_command(app_port), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            deployment.processes.append(process)
            deployment.logs.append(log)
            _wait_for_port(app_port, process, log)
        cert, key = _certificate(work)
        site = work / "site.conf"
        site.write_text(
            render(
                listen=f"127.0.0.1:{port}",
                server_name="127.0.0.1",
                certificate=str(cert),
                certificate_key=str(key),
                static_root=str(work / "static"),
                upstreams=[f"127.0.0.1:{app_port}" for app_port in deployment.app_ports],
                access_log=str(work / "access.log"),
            )
        )
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / name).mkdir()
        main = work / "nginx.conf"
        # (Run as root, the worker would be nobody and could not read the test's private temp dir.)
        user = "user root;" if os.geteuid() == 0 else ""
        main.write_text(
            f"""
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {site};
}}
"""
        )
        nginx_log = work / "nginx.out"
        with nginx_log.open("wb") as output:
            nginx = subprocess.Popen(
                [nginx_binary, "-c", str(main), "-p", str(work)], stdout=output, stderr=subprocess.STDOUT
            )
        deployment.processes.append(nginx)
        deployment.logs.append(work / "error.log")
        _wait_for_port(port, nginx, nginx_log)
        yield deployment
    finally:
        for process in reversed(deployment.processes):
            stop_process(process)


def test_check_deploy_is_clean_with_the_production_settings(deployment: Deployment) -> None:
    """``manage.py check --deploy`` finds nothing with the settings the processes run."""
    output = deployment.manage("check", "--deploy", "--fail-level", "WARNING")
    assert "no issues" in output, output


def test_each_process_is_ready_and_metrics_stay_private(deployment: Deployment) -> None:
    """Every process answers readiness (Redis and the database reachable); nginx does not expose the metrics."""
    for app_port in deployment.app_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/signalr/health/ready", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "ready", body
    request = urllib.request.Request(f"{deployment.url}/signalr/metrics")
    context = __import__("ssl")._create_unverified_context()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=context)
    assert refused.value.code == 404


def test_chat_in_chromium_and_the_official_client_through_nginx(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice and bob chat in Chromium over TLS; a Node client with bob's session takes part, through nginx."""
    site: Any = type("Site", (), {"url": deployment.url})()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=[*CHROMIUM_ARGS, "--ignore-certificate-errors"]
        )
        try:
            alice = log_in(browser, site, "alice")
            bob = log_in(browser, site, "bob")
            try:
                for page in (alice, bob):
                    open_room(page, site, "lobby")
            except Exception as exc:
                logs = "\n".join(f"== {log}\n{log.read_text()[-3000:]}" for log in deployment.logs)
                access = (Path(deployment.env["DJANGO_STATIC_ROOT"]).parent / "access.log").read_text()[-3000:]
                status = alice.locator("#status").inner_text()
                raise AssertionError(f"the room did not connect ({status!r}):\n{logs}\n== access\n{access}") from exc
            alice.get_by_label("Message to").fill("hello through nginx")
            alice.get_by_role("button", name="Send", exact=True).click()
            expect(bob.locator("#messages li.message").last).to_contain_text("hello through nginx")

            cookie = next(c for c in bob.context.cookies() if c["name"] == "sessionid")
            monkeypatch.setenv("NODE_TLS_REJECT_UNAUTHORIZED", "0")  # the test's self-signed certificate
            node = NodeDriver()
            try:
                node.connect(
                    "bob-node",
                    f"{deployment.url}/chatHub",
                    cookie=f"sessionid={cookie['value']}",
                    events=("RoomMessage",),
                    stateful=True,
                )
                node.invoke("bob-node", "JoinRoom", "lobby")
                alice.get_by_label("Message to").fill("to every device of bob")
                alice.get_by_role("button", name="Send", exact=True).click()
                events = node.wait_for("bob-node", lambda events: len(events) >= 1, timeout=10)
                assert events[0]["args"][1]["text"] == "to every device of bob", events
                node.invoke("bob-node", "SendToRoom", "lobby", "from the official client")
                expect(alice.locator("#messages li.message").last).to_contain_text("from the official client")
            finally:
                node.close()
        finally:
            browser.close()
    access_log = Path(deployment.env["DJANGO_STATIC_ROOT"]).parent / "access.log"
    logged = access_log.read_text()
    assert "/chatHub" in logged and "id=" not in logged and "access_token" not in logged, logged[-2000:]
