#!/usr/bin/env bash
# Set up and run the whole test suite (real daphne, the official JS client under Node, pysignalr).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
