#!/usr/bin/env bash
# Run the benchmark suite: installs the bench-only packages (bench/requirements.txt) into .venv and the Node
# baselines' (bench/package.json) into bench/node_modules, then
# `python -m bench "$@"`. `bash bench/run.sh` is the full suite (about 20 min on 2 cores); `--quick` the CI smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
stamp=.venv/.bench-requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s bench/requirements.txt "$stamp"; then
  echo "== pip install -r bench/requirements.txt"
  .venv/bin/python -m pip install --quiet -r bench/requirements.txt
  cp bench/requirements.txt "$stamp"
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== apt-get install nodejs npm (the Node baselines node-ws, node-socketio)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
node_stamp=bench/node_modules/.bench-package-installed
if [ ! -f "$node_stamp" ] || ! cat bench/package.json bench/package-lock.json | cmp -s - "$node_stamp"; then
  echo "== npm ci in bench/ (ws, socket.io: the Node baselines)"
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
  cat bench/package.json bench/package-lock.json >"$node_stamp"
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== apt-get install redis-server (scale-out scenario)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
exec .venv/bin/python -m bench "$@"
