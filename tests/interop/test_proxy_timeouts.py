"""Request headers sent slowly (slow-loris): no ASGI server times them out; the reverse proxy in front does.

daphne and uvicorn read headers for as long as a client dribbles them. The README's advice is a
proxy header timeout (nginx ``client_header_timeout``): this test runs Debian's nginx with that
setting in front of daphne and shows both halves.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import ServerProcess, free_port, stop_process

pytestmark = pytest.mark.timeout(60)

HEADER_TIMEOUT = 2


@pytest.fixture
def nginx(live_server_process: ServerProcess, tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is required (scripts/test.sh installs it)"
    port = free_port()
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"""
worker_processes 1;
daemon off;
user root;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_header_timeout {HEADER_TIMEOUT}s;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{live_server_process.port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""
    )
    process = subprocess.Popen([binary, "-c", str(config), "-p", str(tmp_path)], stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (tmp_path / "error.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield port
    finally:
        stop_process(process)


def _dribble(port: int, seconds: float) -> float | None:
    """Send a request line and then one header byte a second; when the peer closed (s), or None if it never did."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /interop HTTP/1.1\r\n")
        sock.settimeout(1)
        for byte in b"X-Slow: " + b"a" * int(seconds):
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(4096) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started
            else:
                return time.monotonic() - started  # an answer (408) and the close
    return None


def test_slow_headers_are_cut_by_the_proxy_not_by_the_server(nginx, live_server_process):
    direct = _dribble(live_server_process.port, 6)
    through_nginx = _dribble(nginx, 6)
    print(f"slow-loris: daphne alone {direct}, behind nginx closed after {through_nginx} s")
    assert direct is None  # daphne waited the whole 6 s: the reason for the proxy setting
    assert through_nginx is not None and through_nginx < HEADER_TIMEOUT + 3
