#!/usr/bin/env bash
# Set up and run the whole test suite (real daphne, the official JS client under Node, pysignalr,
# signalrcore, redis-server, Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# redis-server: the channels-redis tests start their own on a free port.
# chromium: the browser tests drive Debian's Chromium through Playwright (no browser download).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# nginx: one test shows a reverse proxy's header timeout cutting slow-loris requests (Debian's nginx).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The tests start their own servers on free loopback ports: stop any service apt started.
    for pidfile in /run/nginx.pid /run/redis/redis-server.pid; do
      if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
  else
    echo "the tests need: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
