#!/usr/bin/env bash
# Set up and run the demo site on http://127.0.0.1:8000 (SQLite + in-memory channel layer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python manage.py migrate --verbosity 0
.venv/bin/python manage.py seed_demo
echo "== demo on http://127.0.0.1:${PORT:-8000}  (users alice, bob, carol, admin; password signalr-demo)"
exec .venv/bin/daphne -b 127.0.0.1 -p "${PORT:-8000}" --websocket_connect_timeout 10 hubproject.asgi:application
