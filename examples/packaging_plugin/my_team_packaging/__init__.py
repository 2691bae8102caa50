"""Example ``package.function`` callables: the escape hatch of the telemetry job's Package.

Each takes one record (a dict: the filtered event after the connector's ``values``,
``rename`` and template) and returns a dict (one record), a list of dicts (fan-out, one
record each) or None (drop; the job counts it ``dropped``). They run on a private copy of
the record, so changing it in place is safe. An exception is a dead letter of that event
(``package_function_failed``), never a crash. Plain Python; no import of the job needed::

    connectors:
      - id: amplitude
        type: http
        package: {template: null, function: "my_team_packaging:to_amplitude"}
        deliver: {endpoint: "https://api2.amplitude.com/2/httpapi"}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["amplitude_body", "split_errors", "to_amplitude"]

MIN_ID_LENGTH = 5
"""Amplitude refuses a ``user_id`` or ``device_id`` shorter than this (its default)."""

_PLATFORMS = {"ios": "iOS", "ipados": "iOS", "android": "Android", "tvos": "tvOS"}


def _get(record: dict[str, Any], *path: str) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _epoch_ms(value: Any) -> int | None:
    """Epoch ms from epoch ms or ISO-8601 (``"2025-11-26T06:00:00Z"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            return None
        return int(stamp.timestamp() * 1000)
    return None


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text if len(text) >= MIN_ID_LENGTH else None


def to_amplitude(record: dict[str, Any]) -> dict[str, Any] | None:
    """One item of an Amplitude HTTP API v2 ``events`` list, built from an event.

    What a template cannot say: ``user_id``, else ``device_id``, else the player session as
    the device (Amplitude needs one of the two, at least 5 characters), and an event with
    none of them is dropped (Amplitude would refuse it with a 400); every ``fluxdata``
    measurement goes into ``event_properties`` whatever its name.

    >>> to_amplitude({"event_id": "e1-42", "session_id": "sess-1",
    ...               "event": {"type": "heartbeat", "timestamp": 1764136800123},
    ...               "metadata": {"user": {"id": "u12345"}, "device": {"os": "ios"}},
    ...               "fluxdata": {"bitrate_kbps": 4500}})  # doctest: +NORMALIZE_WHITESPACE
    {'event_type': 'heartbeat', 'insert_id': 'e1-42', 'user_id': 'u12345',
     'time': 1764136800123, 'platform': 'iOS', 'os_name': 'ios',
     'event_properties': {'bitrate_kbps': 4500, 'player_session_id': 'sess-1'}}
    """
    user_id = _id(_get(record, "metadata", "user", "id"))
    device_id = _id(_get(record, "metadata", "device", "id")) or _id(record.get("session_id"))
    if user_id is None and device_id is None:
        return None
    item: dict[str, Any] = {
        "event_type": _get(record, "event", "type"),
        "insert_id": record.get("event_id"),
    }
    if user_id is not None:
        item["user_id"] = user_id
    else:
        item["device_id"] = device_id
    time_ms = _epoch_ms(_get(record, "event", "timestamp"))
    if time_ms is not None:
        item["time"] = time_ms
    os_name = _get(record, "metadata", "device", "os")
    if isinstance(os_name, str):
        item["platform"] = _PLATFORMS.get(os_name.casefold(), os_name)
        item["os_name"] = os_name
    country = _get(record, "metadata", "geo", "country_code")
    if country is not None:
        item["country"] = country
    properties = dict(record.get("fluxdata") or {})
    if record.get("session_id") is not None:
        properties["player_session_id"] = record["session_id"]
    item["event_properties"] = properties
    return item


def amplitude_body(api_key: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole Amplitude HTTP API v2 request body for a batch of ``to_amplitude`` items.

    Not a package function (it takes a batch and the key): for a sender of your own.

    >>> amplitude_body("KEY", [{"event_type": "play", "user_id": "u12345"}])
    {'api_key': 'KEY', 'events': [{'event_type': 'play', 'user_id': 'u12345'}]}
    """
    return {"api_key": api_key, "events": list(events)}


def split_errors(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Fan-out and drop: one record per error code of an error event; others dropped.

    An ``error`` event with ``metadata.error.codes: [4001, 5002]`` becomes two records
    (the job names them ``<event_id>#0`` and ``<event_id>#1``); one with a single
    ``metadata.error.code`` becomes one record; any other event type is dropped.

    >>> split_errors({"event_id": "e1", "event": {"type": "error"},
    ...               "metadata": {"error": {"codes": [4001, 5002]}}})
    [{'event_id': 'e1', 'error_code': 4001}, {'event_id': 'e1', 'error_code': 5002}]
    >>> split_errors({"event_id": "e2", "event": {"type": "heartbeat"}}) is None
    True
    """
    if _get(record, "event", "type") != "error":
        return None
    codes = _get(record, "metadata", "error", "codes")
    if not isinstance(codes, list):
        codes = [_get(record, "metadata", "error", "code")]
    return [{"event_id": record.get("event_id"), "error_code": code} for code in codes]
