"""Fill deploy/nginx-site.conf.template: ``python deploy/render.py --listen 443 --server-name chat.example.com ...``.

Prints the nginx site configuration. ``--upstream`` is repeated once per app process
(``127.0.0.1:8001``); every other value has a flag of its own. tests/deploy renders it the same way.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TEMPLATE = Path(__file__).with_name("nginx-site.conf.template")


def render(
    *,
    listen: str,
    server_name: str,
    certificate: str,
    certificate_key: str,
    static_root: str,
    upstreams: list[str],
    access_log: str = "/var/log/nginx/signalr_groups.access.log",
) -> str:
    """The site configuration for these values."""
    if not upstreams:
        raise ValueError("at least one --upstream (host:port of an app process) is needed")
    # max_fails=0: a draining process's 503 must not take it out of rotation (a rolling restart
    # would then find no live upstream); a process that is down costs a refused connection, retried.
    servers = "\n".join(f"    server {upstream} max_fails=0;" for upstream in upstreams)
    values = {
        "LISTEN": listen,
        "SERVER_NAME": server_name,
        "CERTIFICATE": certificate,
        "CERTIFICATE_KEY": certificate_key,
        "STATIC_ROOT": static_root.rstrip("/"),
        "UPSTREAM_SERVERS": servers,
        "ACCESS_LOG": access_log,
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise ValueError(f"the template has values render() does not fill: {', '.join(sorted(set(left)))}")
    return text


def main() -> None:
    """Parse the flags and print the configuration."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="443")
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--certificate-key", required=True)
    parser.add_argument("--static-root", required=True)
    parser.add_argument("--upstream", action="append", default=[], help="host:port of an app process (repeat)")
    parser.add_argument("--access-log", default="/var/log/nginx/signalr_groups.access.log")
    args = parser.parse_args()
    print(
        render(
            listen=args.listen,
            server_name=args.server_name,
            certificate=args.certificate,
            certificate_key=args.certificate_key,
            static_root=args.static_root,
            upstreams=args.upstream,
            access_log=args.access_log,
        )
    )


if __name__ == "__main__":
    main()
