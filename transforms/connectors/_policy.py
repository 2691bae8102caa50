r"""The policy every connector shares: which statuses to retry, ``Retry-After``, redaction.

One place, so that no connector can answer these differently::

    is_retryable_status(503)                   # True: 408, 429 and 5xx are worth retrying
    parse_retry_after("NaN")                   # None: only a finite wait >= 0, or nothing
    parse_retry_after("Wed, 26 Nov 2025 06:00:10 GMT")   # seconds until then (0 if past)
    redact("POST /services/T/B/xoxb-123 failed", ["xoxb-123"])   # 'POST /services/T/B/*** failed'

:func:`redact` is the one redaction of every error text (exceptions, dead letters, retry
records, logs): each known secret however it is spelled (raw, percent-, JSON- or
Python-escaped), URL query strings and key-like parameters. It is a plain rule, kept in
:mod:`transforms.rules.redact` with :func:`secret_values`, and used from here.

:func:`guard_logs` extends the same redaction to the HTTP libraries' own log records
(urllib3 logs each request line, path and query included, at DEBUG level).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

# The redaction is a plain rule (transforms/rules/redact.py); the connectors use it from here.
from transforms.rules.redact import MIN_SECRET_CHARS, REDACTED, redact, secret_values

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "guard_logs",
    "is_retryable_status",
    "parse_retry_after",
    "redact",
    "secret_values",
]

MAX_RETRY_AFTER_S = 7 * 24 * 3600.0
"""The longest ``Retry-After`` taken literally; anything longer is read as this (a week)."""


def is_retryable_status(status: int | None) -> bool:
    """HTTP statuses worth retrying: 408 (timeout), 429 (throttled) and every 5xx.

    >>> [s for s in (400, 404, 408, 429, 500, 503) if is_retryable_status(s)]
    [408, 429, 500, 503]
    """
    return status is not None and (status in (408, 429) or status >= 500)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 26 Nov 2025 06:00:10 GMT",
    ...                   datetime(2025, 11, 26, 6, 0, 0, tzinfo=timezone.utc))
    10.0

    Total: whatever the header says, the answer is None (absent or unreadable: ``NaN``,
    ``inf``, garbage, an impossible date) or a finite number of seconds from 0 (a past
    date, a negative number) to :data:`MAX_RETRY_AFTER_S`. How long to really wait is the
    retry policy's decision (:meth:`transforms.rules.retry.RetryPolicy.delay` caps it).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    seconds: float | None = None
    if _NUMBER.match(value):
        try:
            seconds = float(value)
        except (ValueError, OverflowError):
            return None
    else:
        seconds = _seconds_until(value, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# RFC 9110 says digits only; a decimal point or a sign is tolerated (servers send "1.5"),
# but not what else float() reads ("nan", "1_000", non-ASCII digits).
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)


def _seconds_until(value: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return (when - (now or datetime.now(timezone.utc))).total_seconds()
    except (OverflowError, ValueError):
        return None


_LOGGED_SECRETS: set[str] = set()
_LOG_LOCK = threading.Lock()
_GUARDED_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.poolmanager",
    "urllib3.util.retry",
)
"""The loggers of the HTTP stack that write request lines (with paths and queries)."""


class _RedactingFilter(logging.Filter):
    """Rewrites a log record's message with :func:`redact` and every guarded secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(_LOGGED_SECRETS)
        if secrets:
            record.msg = redact(record.getMessage(), secrets)
            record.args = ()
        return True


_FILTER = _RedactingFilter()


def guard_logs(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` from the HTTP libraries' log records, in this process, from now on.

    The library loggers are process-wide, so the secrets are kept for the process's life
    (they are in its memory anyway, in the connector's config).
    """
    values = secret_values(*secrets)
    with _LOG_LOCK:
        _LOGGED_SECRETS.update(values)
        for name in _GUARDED_LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
