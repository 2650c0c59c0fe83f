"""The packaging part: the built wheel and sdist, installed into a fresh virtualenv (``pytest -m packaging``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: the wheel and sdist built, installed into a fresh virtualenv and served by daphne"
    )
