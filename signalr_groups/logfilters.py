"""Keep access tokens and connection tokens out of logs.

The browser client sends its access token in the WebSocket URL (``?access_token=``) and every
client sends its connection token as ``?id=``; servers such as uvicorn log that URL. The app
installs :class:`RedactTokensFilter` on the usual server and Django loggers when it starts, and
you can add it to any other logger or handler in ``LOGGING``.
"""

from __future__ import annotations

import logging
import re
from typing import Final

_QUERY = re.compile(r"((?:^|[?&\s])(?:access_token|id)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/:=-]+", re.IGNORECASE)
REDACTED: Final = "[redacted]"

#: Loggers that print request URLs: uvicorn, daphne, Django's own.
SERVER_LOGGERS: Final = (
    "uvicorn.error",
    "uvicorn.access",
    "daphne.server",
    "daphne.http_protocol",
    "daphne.ws_protocol",
    "django.request",
    "django.server",
    "django.channels.server",
)


def redact(text: str) -> str:
    """Replace ``access_token=``/``id=`` query values and ``Bearer`` tokens in ``text``."""
    return _BEARER.sub(rf"\g<1>{REDACTED}", _QUERY.sub(rf"\g<1>{REDACTED}", text))


class RedactTokensFilter(logging.Filter):
    """A logging filter that rewrites a record's message with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops a record."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            # Keep the tuple's shape: formatters such as uvicorn's AccessFormatter unpack it.
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                key: redact(value) if isinstance(value, str) else value for key, value in record.args.items()
            }
        return True


def install() -> None:
    """Add the filter to :data:`SERVER_LOGGERS` (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokensFilter) for existing in logger.filters):
            logger.addFilter(RedactTokensFilter())
