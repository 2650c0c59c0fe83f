#!/usr/bin/env bash
# Run the benchmark suite: installs the bench-only packages (bench/requirements.txt) into .venv, then
# `python -m bench "$@"`. `bash bench/run.sh` is the full suite (< 10 min on 2 cores); `--quick` the CI smoke run.
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
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== apt-get install redis-server (scale-out scenario)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
exec .venv/bin/python -m bench "$@"
