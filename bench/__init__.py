"""Benchmark suite: our hub against raw websockets, a plain Channels consumer and python-socketio.

Run everything with ``bash bench/run.sh`` (or ``.venv/bin/python -m bench``); ``--quick`` is the CI
smoke mode. See docs/performance.md.
"""

from __future__ import annotations
