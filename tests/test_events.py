from __future__ import annotations

import base64

import orjson
import pytest

from transforms.rules.events import MAX_EVENT_BYTES, MAX_ORIGINAL_CHARS, event_time_ms, parse_line
from transforms.rules.records import DeadLetter


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "x", broken', "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b'{"event": {"type": "heartbeat"}}', "no_event_id"),
        (b'{"event_id": 5, "event": {"type": "heartbeat"}}', "no_event_id"),
        (b'{"event_id": "a"}', "no_event_type"),
        (b'{"event_id": "a", "event": {"type": 42}}', "no_event_type"),
        (b'{"event_id": "a", "event": {"type": ""}}', "no_event_type"),
        (b'{"event_id": "a", "event": "heartbeat"}', "no_event_type"),
        (b'\xff\xfe{"event_id": "a"}', "not_utf8"),
    ],
)
def test_invalid_lines_become_dead_letters(raw: bytes, reason: str) -> None:
    out = parse_line(raw)
    assert isinstance(out, DeadLetter)
    assert out.reason == reason and out.stage == "parse" and out.connector is None
    record = out.to_json_dict()
    assert record["attempts"] == 0 and record["error"]
    if reason == "not_utf8":
        assert record["original_encoding"] == "base64"
        assert base64.b64decode(record["original"]) == raw
    else:
        assert record["original"] == raw.decode("utf-8")


def test_too_large_lines_are_truncated_in_the_dead_letter() -> None:
    raw = b'{"event_id": "a", "event": {"type": "x"}, "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}'
    out = parse_line(raw)
    assert isinstance(out, DeadLetter) and out.reason == "too_large"
    record = out.to_json_dict()
    assert record["original_truncated"] is True
    assert record["original_bytes"] == len(raw)
    assert len(record["original"]) == MAX_ORIGINAL_CHARS
    # Dead letters themselves must serialize.
    orjson.dumps(record)


def test_valid_event_with_unicode_and_line_separator() -> None:
    raw = '{"event_id": "é1", "event": {"type": "heartbeat"}, "metadata": {"t": "a\u2028b"}}'
    out = parse_line(raw.encode("utf-8"))
    assert isinstance(out, dict) and out["metadata"]["t"] == "a\u2028b"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1764136800123, 1764136800123),
        (1764136800123.9, 1764136800123),
        ("2025-11-26T06:00:00.123Z", 1764136800123),
        ("2025-11-26T06:00:00.123+00:00", 1764136800123),
        ("garbage", None),
        (True, None),
        (None, None),
    ],
)
def test_event_time(ts: object, expected: int | None) -> None:
    assert event_time_ms({"event": {"type": "x", "timestamp": ts}}) == expected
