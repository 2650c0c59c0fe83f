"""The nginx configuration the round-robin tests run: two upstreams, no sticky sessions, on loopback."""

from __future__ import annotations

from pathlib import Path


def round_robin_config(
    prefix: Path,
    port: int,
    upstreams: tuple[int, ...],
    *,
    read_timeout: int = 120,
    server_options: str = "",
    location_extra: str = "",
) -> str:
    """A whole nginx.conf: plain round robin (no ip_hash, no hash, no sticky) over ``upstreams``.

    The access log has one ``upstream|status|method|uri|request time|upstream time`` line per request.
    ``server_options`` follow each upstream's address; ``location_extra`` is added to the location.
    """
    servers = "\n".join(
        f"        server 127.0.0.1:{upstream}{' ' + server_options if server_options else ''};"
        for upstream in upstreams
    )
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format rr '$upstream_addr|$status|$request_method|$request_uri|$request_time|$upstream_response_time';
    access_log {prefix}/access.log rr;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream signalr {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://signalr;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Server-Sent Events and long polls: pass data on at once, and wait long for it.
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout {read_timeout}s;
            proxy_send_timeout {read_timeout}s;
{location_extra}
        }}
    }}
}}
"""
