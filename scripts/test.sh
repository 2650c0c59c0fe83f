#!/usr/bin/env bash
# Set up and run the whole test suite (real daphne, the official JS client under Node, pysignalr,
# signalrcore, redis-server). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "== apt-get install redis-server (the channels-redis tests start their own on a free port)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is needed by the tests: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
