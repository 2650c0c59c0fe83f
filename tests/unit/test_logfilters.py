"""Credentials in query strings are redacted from log lines, however the parameter name is spelled."""

from __future__ import annotations

import pytest

from signalr_groups.logfilters import redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /hub?id=tok&x=1", "GET /hub?id=[redacted]&x=1"),
        ("GET /hub?%69d=tok&x=1", "GET /hub?%69d=[redacted]&x=1"),  # percent-encoded "id", which servers decode
        ("GET /hub?i%64=tok", "GET /hub?i%64=[redacted]"),
        ("GET /hub?ID=tok", "GET /hub?ID=[redacted]"),
        ("GET /hub?%61ccess_token=tok", "GET /hub?%61ccess_token=[redacted]"),
        ("GET /hub?access%5Ftoken=tok&valid=yes", "GET /hub?access%5Ftoken=[redacted]&valid=yes"),
        ("GET /hub?bid=1&idx=2", "GET /hub?bid=1&idx=2"),  # other names are kept
    ],
)
def test_query_credentials_are_redacted(line, expected):
    assert redact(line) == expected
