"""Keep access tokens and connection tokens out of logs.

The browser client sends its access token in the WebSocket URL (``?access_token=``) and every
client sends its connection token as ``?id=``; servers such as uvicorn log that URL. The app
installs :class:`RedactTokensFilter` on the usual server and Django loggers when it starts, and
you can add it to any other logger or handler in ``LOGGING``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
from typing import Any, Final
from urllib.parse import unquote_plus

from daphne.access import AccessLogGenerator

from signalr_groups import metrics

#: A query parameter (name=value) in a URL or a log line; names may be percent-encoded (``%69d``).
_QUERY = re.compile(r"((?:^|[?&\s])([A-Za-z0-9_.~+%-]+)=)([^&\s\"']+)")
#: Parameter names whose values are credentials, compared after percent-decoding, case-insensitively.
_SECRET_NAMES: Final = frozenset({"access_token", "id"})
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


def _redact_parameter(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).lower() in _SECRET_NAMES:
        return match.group(1) + REDACTED
    return match.group(0)


def redact(text: str) -> str:
    """Replace ``access_token=``/``id=`` query values (names percent-encoded too) and ``Bearer`` tokens in ``text``."""
    return _BEARER.sub(rf"\g<1>{REDACTED}", _QUERY.sub(_redact_parameter, text))


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
    """Add the filter to :data:`SERVER_LOGGERS`, and redact daphne's access log (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokensFilter) for existing in logger.filters):
            logger.addFilter(RedactTokensFilter())
    _redact_daphne_access_log()


def _redact_daphne_access_log() -> None:
    """daphne writes its access log straight to a stream, past every logging filter: redact its request line.

    (An HTTP request's line carries its query string: the long-polling and Server-Sent Events
    requests' ``id=`` and ``access_token=``.) Wraps ``daphne.access.AccessLogGenerator.write_entry``,
    whose ``request`` argument is the logged request line; left alone if daphne changes it.
    """
    original = getattr(AccessLogGenerator, "write_entry", None)
    if original is None or getattr(original, "_signalr_redacts", False):
        return
    if "request" not in inspect.signature(original).parameters:
        return

    @functools.wraps(original)
    def write_entry(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(original).bind(self, *args, **kwargs)
        request = bound.arguments.get("request")
        if isinstance(request, str):
            bound.arguments["request"] = redact(request)
        return original(*bound.args, **bound.kwargs)

    write_entry._signalr_redacts = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_entry


#: channels-redis' message when a group send skips channels that are full (it logs it at INFO).
_OVER_CAPACITY: Final = "%s of %s channels over capacity in group %s"
_dropped = 0


def dropped_messages() -> int:
    """How many channel-layer messages channels-redis dropped for capacity in this process so far."""
    return _dropped


class CapacityDropFilter(logging.Filter):
    """Count the messages ``RedisChannelLayer.group_send`` drops for capacity, and log them at WARNING.

    channels-redis skips a full channel silently apart from an INFO line, which default logging
    hides: a process whose layer channel filled up would lose messages without a trace.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Promote the over-capacity record; pass every other record only if it was meant to show."""
        global _dropped
        if record.msg == _OVER_CAPACITY and isinstance(record.args, tuple) and record.args:
            with contextlib.suppress(TypeError, ValueError):
                count = int(record.args[0])  # type: ignore[call-overload]
                _dropped += count
                metrics.layer_dropped(count)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = (
                "signalr_groups: a channel-layer message was dropped: %s of %s channels over capacity in "
                "group %s (receivers too slow, or a dead process's channel; raise the layer's capacity)"
            )
            return True
        return _was_enabled(record)


_previous_levels: dict[str, int] = {}


def _was_enabled(record: logging.LogRecord) -> bool:
    return record.levelno >= _previous_levels.get(record.name, logging.WARNING)


def install_capacity_watch() -> None:
    """Watch ``channels_redis.core`` for dropped messages (idempotent).

    Its INFO records must reach the filter, so the logger's level is lowered to INFO when it was
    higher; every other record is passed on only if the previous level let it through.
    """
    logger = logging.getLogger("channels_redis.core")
    if any(isinstance(item, CapacityDropFilter) for item in logger.filters):
        return
    effective = logger.getEffectiveLevel()
    _previous_levels[logger.name] = effective
    if effective > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addFilter(CapacityDropFilter())
