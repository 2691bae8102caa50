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

What a line may be, and what the job does at the edges (the README's "Limits"):

- at most :data:`MAX_EVENT_BYTES` (1 MiB), else ``too_large``;
- nested at most :data:`MAX_DEPTH` (64) levels, else ``too_deep``;
- a duplicate key keeps its last value: ``{"k": 1, "k": 2}`` is ``{"k": 2}`` (routes
  and filters see 2; a connector that passes lines on unchanged writes the line as is);
- integers in [-2**63, 2**64 - 1] are read exactly, larger ones as the nearest float
  (``18446744073709551616`` is ``1.8446744073709552e19``): send longer ids as strings;
- a UTF-8 byte order mark is skipped at the start of a file
  (:func:`transforms.parse.open_lines`), and is ``bad_json`` anywhere else.

Plain Python, no Beam import: the pipeline, the ``dry-run`` command and the benchmark
bound all call these functions.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from transforms.rules.records import DeadLetter

MAX_EVENT_BYTES = 1024 * 1024
"""Lines longer than this (1 MiB) are dead letters with reason ``too_large``."""

MAX_ORIGINAL_CHARS = 64 * 1024
"""Dead letters of a file's line keep at most this much of it (64 KiB), noting its length.

The file still holds the whole line. A Pub/Sub message's dead letter keeps all of it
(``parse_line(raw, whole=True)``): the message exists nowhere else."""

MAX_DEPTH = 64
"""Events nested deeper than this (the event object is level 1) are dead letters with reason
``too_deep``.

Why 64: orjson reads 1,024 levels but writes only 254, and pickling (how chunks cross
processes) runs out of Python's recursion limit at a few hundred; an event also travels
nested inside retry records and dead letters (3 levels more), and the rules walk it
recursively. 64 is 20 times the envelope's own depth (event, ``metadata``, ``device``: 3)
and far from every one of those limits. Checking costs two byte counts per line; an event with
more than 64 brackets is then measured exactly (:func:`too_deep`)."""

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


def original_text(raw: bytes, size: int | None = None, whole: bool = False) -> dict[str, Any]:
    """Describe a raw line for a dead letter: UTF-8 text or base64, truncated past 64 KiB.

    ``size`` is the line's full length when ``raw`` is only its start (a line too long to
    read whole); ``whole`` keeps all of ``raw`` (a Pub/Sub message). A cut never splits a
    UTF-8 character: ``original_text(b"a" + "é".encode() * 40000)["original"]`` is ``a``
    and 32,767 ``é`` (65,535 bytes), still text rather than base64.
    """
    size = len(raw) if size is None else size
    clipped = raw if whole else raw[:MAX_ORIGINAL_CHARS]
    out: dict[str, Any]
    try:
        out = {"original": _utf8_prefix(clipped, len(clipped) < size), "original_encoding": "utf-8"}
    except UnicodeDecodeError:
        out = {
            "original": base64.b64encode(clipped).decode("ascii"),
            "original_encoding": "base64",
        }
    out["original_bytes"] = size
    out["original_truncated"] = len(clipped) < size
    return out


def _utf8_prefix(data: bytes, cut: bool) -> str:
    """``data`` as text; when ``cut``, a character split by the cut is left out."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only the last 1-3 bytes of a cut may be a partial character; anything else is not UTF-8.
        if cut and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        raise


def too_large(head: bytes, size: int) -> DeadLetter:
    """The dead letter of a line of ``size`` bytes over the limit, given its first bytes.

    Readers that stream a long line keep only its start (:data:`MAX_ORIGINAL_CHARS`)::

        >>> too_large(b'{"event_id": "x", "pad": "xx', 3_000_000).reason
        'too_large'
    """
    return DeadLetter(
        stage="parse",
        reason="too_large",
        error=f"line is {size} bytes; the limit is {MAX_EVENT_BYTES}",
        original=original_text(head, size),
    )


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests more than ``limit`` levels (the value is level 1).

    >>> too_deep({"a": [{"b": 1}]}, 3), too_deep({"a": [{"b": 1}]}, 2)
    (False, True)
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:  # orjson makes no other containers
                stack.append((child, depth + 1))
    return False


def _refuse(raw: bytes, reason: str, error: str, whole: bool) -> DeadLetter:
    if not whole:
        return DeadLetter.for_input(reason=reason, error=error, raw=raw)
    return DeadLetter(
        stage="parse", reason=reason, error=error, original=original_text(raw, whole=True)
    )


_DEPTH_ERROR = f"nested deeper than the limit of {MAX_DEPTH} levels"


def parse_line(raw: bytes, whole: bool = False) -> dict[str, Any] | DeadLetter:
    """Parse one line into an event, or a dead letter saying why it is not one.

    Checks, in order: size (<= 1 MiB), UTF-8, JSON, depth (<= :data:`MAX_DEPTH`), a JSON
    object, a string ``event_id``, an object ``event`` with a string ``type``. With
    ``whole`` (a Pub/Sub message) the dead letter keeps all of ``raw``, not 64 KiB.
    """
    if len(raw) > MAX_EVENT_BYTES:
        return _refuse(
            raw, "too_large", f"line is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}", whole
        )
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return _refuse(raw, "not_utf8", f"not valid UTF-8: {uexc}", whole)
        if str(exc).startswith("depth limit exceeded"):  # orjson's own, at 1,024 levels
            return _refuse(raw, "too_deep", _DEPTH_ERROR, whole)
        return _refuse(raw, "bad_json", f"not valid JSON: {exc}", whole)
    # Brackets bound the depth from above: only a line with many is measured.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and too_deep(event):
        return _refuse(raw, "too_deep", _DEPTH_ERROR, whole)
    if not isinstance(event, dict):
        return _refuse(
            raw, "not_an_object", f"expected a JSON object, got {type(event).__name__}", whole
        )
    if not isinstance(event.get("event_id"), str) or not event["event_id"]:
        return _refuse(raw, "no_event_id", "event_id must be a non-empty string", whole)
    body = event.get("event")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not body["type"]:
        return _refuse(raw, "no_event_type", "event.type must be a non-empty string", whole)
    return event


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


def iso_time(text: str) -> datetime | None:
    """Read an ISO-8601 time as an aware datetime (no zone: UTC); None if it is not one.

    ``Z`` means UTC on every Python the project supports (3.10's ``fromisoformat`` refuses
    it), e.g. ``"2025-11-26T06:00:00.123Z"`` is 06:00:00.123 UTC. A string of digits is no
    time (3.11 reads ``"2013123090000"`` as a basic-format date), so it is None.

    >>> iso_time("2025-11-26T06:00:00.123Z").isoformat()
    '2025-11-26T06:00:00.123000+00:00'
    >>> iso_time("1764136800123") is None
    True
    """
    if text.strip().lstrip("+-").isdigit():
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def to_epoch_ms(value: Any) -> int | None:
    """Read a timestamp (epoch ms number or ISO-8601 string) as epoch ms; None if neither.

    A string without a zone is read as UTC. A string of digits is no time: it is epoch
    milliseconds written as text, which Python 3.11 would read as a basic ISO-8601 date
    (``"2013123090000"`` as 2013-12-30), so it is refused rather than guessed.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        parsed = iso_time(value)
        if parsed is None:
            return None
        # Exact: through a float, "...:38.035Z" read as ...034.999 ms and truncated to 034.
        return (parsed - _EPOCH) // _ONE_MS
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
