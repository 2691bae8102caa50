from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from apache_beam.pvalue import TaggedOutput
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transforms.parse import _ParseChunk
from transforms.rules.events import (
    MAX_EVENT_BYTES,
    MAX_ORIGINAL_CHARS,
    event_time_ms,
    parse_line,
    to_epoch_ms,
)
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


LINES = st.sampled_from(
    [
        b'{"event_id": "a", "event": {"type": "heartbeat"}, "metadata": {}}',
        b'{"event_id": "b", "event": {"type": "error", "timestamp": 1}}',
        b'{"event_id": "", "event": {"type": "heartbeat"}}',
        b'{"event_id": "c", "event": {"type": ["x"]}}',
        b'{"event_id": "d", "event": {"type": ""}}',
        b'{"event_id": ["e"], "event": {"type": "x"}}',
        b'{"event_id": "f", "event": null}',
        b'{"event_id": "g"',
        b"[1]",
        b"null",
        b"",
        b"   ",
        b"\t",
        b"\xff\xfe",
        b'  {"event_id": "h", "event": {"type": "seek"}}  ',
        b"x" * (MAX_EVENT_BYTES + 1),
        b'{"event_id": "i", "event": {"type": "x"}, "pad": "' + b"p" * MAX_EVENT_BYTES + b'"}',
    ]
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(LINES, max_size=12), size=st.integers(1, 5))
def test_parse_stage_gives_parse_line_answers_for_every_line(lines: list[bytes], size: int) -> None:
    # The Parse DoFn inlines parse_line's checks for valid events; same answers wanted.
    fn = _ParseChunk(size)
    fn.setup()
    events: list[Any] = []
    refused: list[str] = []
    for out in fn.process(("f", 0, lines)):
        if isinstance(out, TaggedOutput):
            refused += [d.reason for d in out.value]
        else:
            events += out
    want = [parse_line(line) for line in lines if line.strip()]
    assert events == [w for w in want if not isinstance(w, DeadLetter)]
    assert refused == [w.reason for w in want if isinstance(w, DeadLetter)]


@given(
    ms=st.integers(
        min_value=-62_135_596_800_000,  # 0001-01-01
        max_value=253_402_300_799_999,  # 9999-12-31T23:59:59.999
    )
    | st.integers(min_value=0, max_value=100_000)  # ~1 in 1,000 read wrong through a float
)
@example(ms=2_078_035).via("1970-01-01T00:34:38.035Z, read as ...034 through a float")
def test_an_iso_timestamp_reads_back_to_its_exact_millisecond(ms: int) -> None:
    when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    text = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert to_epoch_ms(text) == ms, text
