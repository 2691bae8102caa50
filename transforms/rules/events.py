"""The event envelope: parsing raw lines, reading dotted paths, event time.

An event is one JSON object per line (or per Pub/Sub message)::

    {"event_id": "s1-1", "session_id": "s1",
     "event": {"type": "heartbeat", "timestamp": 1764136800123},
     "metadata": {...}, "fluxdata": {...}}

``parse_line`` turns raw bytes into an event dict or a :class:`~transforms.rules.records.DeadLetter`
naming why the line was refused. It never raises on input::

    >>> parse_line(b'{"event_id": "a", "event": {"type": "heartbeat"}}')
    {'event_id': 'a', 'event': {'type': 'heartbeat'}}
    >>> parse_line(b'[1]').reason
    'not_an_object'

Plain Python, no Beam import: the pipeline, the ``dry-run`` command and the benchmark
bound all call these functions.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson

from transforms.rules.records import DeadLetter

MAX_EVENT_BYTES = 1024 * 1024
"""Lines longer than this (1 MiB) are dead letters with reason ``too_large``."""

MAX_ORIGINAL_CHARS = 64 * 1024
"""Dead letters keep at most this much of the raw line (64 KiB), noting the full length."""

_MISSING = object()


def get_path(obj: Any, path: tuple[str, ...], default: Any = _MISSING) -> Any:
    """Return the value at a dotted path (given split), or ``default`` when absent.

    Example: ``get_path(event, ("metadata", "geo", "country_code"))``.
    """
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key, _MISSING)
        if obj is _MISSING:
            return default
    return obj


def path_getter(path: tuple[str, ...]) -> Callable[[Any], Any]:
    """A function of ``obj`` equal to ``get_path(obj, path)`` (``MISSING`` when absent).

    Rules compile their paths once; paths of 1 to 3 keys (nearly all) get a function
    without the loop, which is what the per-event cost of a rule mostly is.
    """
    if len(path) == 1:
        (a,) = path

        def get1(obj: Any) -> Any:
            return obj.get(a, _MISSING) if isinstance(obj, dict) else _MISSING

        return get1
    if len(path) == 2:
        a, b = path

        def get2(obj: Any) -> Any:
            if isinstance(obj, dict):
                obj = obj.get(a)  # absent or None: not a dict, so MISSING below
                if isinstance(obj, dict):
                    return obj.get(b, _MISSING)
            return _MISSING

        return get2
    if len(path) == 3:
        a, b, c = path

        def get3(obj: Any) -> Any:
            if isinstance(obj, dict):
                obj = obj.get(a)
                if isinstance(obj, dict):
                    obj = obj.get(b)
                    if isinstance(obj, dict):
                        return obj.get(c, _MISSING)
            return _MISSING

        return get3
    return lambda obj: get_path(obj, path)


def split_path(path: str) -> tuple[str, ...]:
    """Split a dotted path (``metadata.geo.country_code``) into its keys."""
    return tuple(path.split("."))


MISSING = _MISSING
"""Sentinel returned by :func:`get_path` for an absent value when no default is given."""


def original_text(raw: bytes) -> dict[str, Any]:
    """Describe a raw line for a dead letter: UTF-8 text or base64, truncated past 64 KiB."""
    size = len(raw)
    clipped = raw[:MAX_ORIGINAL_CHARS]
    out: dict[str, Any]
    try:
        out = {"original": clipped.decode("utf-8"), "original_encoding": "utf-8"}
    except UnicodeDecodeError:
        out = {
            "original": base64.b64encode(clipped).decode("ascii"),
            "original_encoding": "base64",
        }
    out["original_bytes"] = size
    out["original_truncated"] = size > MAX_ORIGINAL_CHARS
    return out


def _refuse(raw: bytes, reason: str, error: str) -> DeadLetter:
    return DeadLetter.for_input(reason=reason, error=error, raw=raw)


def parse_line(raw: bytes) -> dict[str, Any] | DeadLetter:
    """Parse one line into an event, or a dead letter saying why it is not one.

    Checks, in order: size (<= 1 MiB), UTF-8, JSON, a JSON object, a string
    ``event_id``, an object ``event`` with a string ``type``.
    """
    if len(raw) > MAX_EVENT_BYTES:
        return _refuse(
            raw, "too_large", f"line is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}"
        )
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return _refuse(raw, "not_utf8", f"not valid UTF-8: {uexc}")
        return _refuse(raw, "bad_json", f"not valid JSON: {exc}")
    if not isinstance(event, dict):
        return _refuse(raw, "not_an_object", f"expected a JSON object, got {type(event).__name__}")
    if not isinstance(event.get("event_id"), str) or not event["event_id"]:
        return _refuse(raw, "no_event_id", "event_id must be a non-empty string")
    body = event.get("event")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not body["type"]:
        return _refuse(raw, "no_event_type", "event.type must be a non-empty string")
    return event


def to_epoch_ms(value: Any) -> int | None:
    """Read a timestamp (epoch ms number or ISO-8601 string) as epoch ms; None if neither.

    A string without a zone is read as UTC.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00", 1))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp() * 1000)
    return None


def event_time_ms(event: dict[str, Any]) -> int | None:
    """Return ``event.timestamp`` as epoch milliseconds, or None if absent or unreadable."""
    body = event.get("event")
    if not isinstance(body, dict):
        return None
    value = body.get("timestamp")
    if type(value) is int:  # the common case, without the general checks
        return value
    return to_epoch_ms(value)
