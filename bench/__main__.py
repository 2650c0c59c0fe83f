"""``python -m bench``: run the suite (see bench/suite.py)."""

from __future__ import annotations

from bench.suite import main

if __name__ == "__main__":
    main()
