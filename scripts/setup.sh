#!/usr/bin/env bash
# Set up a development environment: .venv with the pinned Python packages, node_modules with the
# official SignalR client. Safe to run again; it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "== pip install -r requirements.txt"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  cp requirements.txt "$stamp"
fi
docs_stamp=.venv/.docs-requirements-installed
if [ ! -f "$docs_stamp" ] || ! cmp -s docs/requirements.txt "$docs_stamp"; then
  echo "== pip install -r docs/requirements.txt (the documentation site: mkdocs, Material, mkdocstrings)"
  .venv/bin/python -m pip install --quiet -r docs/requirements.txt
  cp docs/requirements.txt "$docs_stamp"
fi
if [ ! -f node_modules/@microsoft/signalr/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== npm ci (official @microsoft/signalr client)"
  npm ci --no-audit --no-fund --loglevel=error
fi
