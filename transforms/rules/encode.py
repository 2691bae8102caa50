r"""Encodings of a batch of records: the bytes a file, object or request body holds.

    >>> encode_batch([{"a": 1}, {"a": 2}], "ndjson", schema_name="x")
    b'{"a":1}\\n{"a":2}\\n'

Formats (the connector's ``deliver.format``):

=============  =========  ===================================================================
format         extension  content
=============  =========  ===================================================================
``ndjson``     .ndjson    one JSON object per line
``ndjson.gz``  .ndjson.gz the same, gzip-compressed (deterministic bytes: no mtime)
``json_array`` .json      one JSON array of objects
``avro``       .avro      Avro object container (fastavro, deflate); see :data:`AVRO_SCHEMA`
=============  =========  ===================================================================

JSON is written with orjson (an event a connector passes on unchanged is sent as its
input line instead: :func:`line_json`). U+2028 and U+2029 are escaped (``\\u2028``) so that the
output is also safe for JavaScript and for line splitters that treat them as newlines.
Plain Python, no Beam import.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import fastavro
import orjson

from transforms.rules import gzipio
from transforms.rules.records import Packaged

FORMATS = {"ndjson": ".ndjson", "ndjson.gz": ".ndjson.gz", "json_array": ".json", "avro": ".avro"}
"""Each format and the file extension it is written with."""

GZIP_LEVEL = 6
"""Default gzip compression level (the gzip tool's default; a good size/CPU balance).

A ``file`` connector can set its own (``deliver.gzip_level``, 1-9): level 1 compresses
in about 40% of level 6's CPU and writes files about 1.8x larger (bench/RESULTS.md)."""

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "TelemetryRecord",
    "namespace": "telemetry_delivery",
    "doc": "One delivered record. 'record' is the packaged record as JSON, so any shape "
    "round-trips; the other fields are typed copies for partitioning and queries.",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_type", "type": "string"},
        {"name": "event_time_ms", "type": ["null", "long"], "default": None},
        {"name": "record", "type": "string"},
    ],
}
"""The Avro schema: typed envelope fields plus the whole record as JSON text."""

_PARSED_AVRO_SCHEMA = fastavro.parse_schema(AVRO_SCHEMA)


_LINE_SEPARATORS = re.compile(b"\xe2\x80[\xa8\xa9]").search
"""Finds U+2028/U+2029 in UTF-8. Measured on the bench corpus's records (674 bytes,
most with non-ASCII text): 0.57 us per record, against 1.05 us for the substring test
``b"\\xe2\\x80" in data``; it runs once per record."""


def dumps(record: Any) -> bytes:
    """Serialize one record as compact JSON bytes (U+2028/U+2029 escaped)."""
    data = orjson.dumps(record)
    if _LINE_SEPARATORS(data) is not None:
        data = _escape_line_separators(data)
    return data


def line_json(line: bytes) -> bytes | None:
    r"""The record of an event a connector passes on unchanged, from the event's input line.

    Used instead of :func:`dumps` of the parsed event when a connector has no filter and
    no package step (an archive): the same JSON value, since the line parses to that
    event, written as the producer wrote it (key order, number spelling, escapes and any
    spaces inside are the line's own), with the surrounding whitespace removed and
    U+2028/U+2029 escaped as :func:`dumps` does. It saves serializing the whole event
    (bench/RESULTS.md).

        >>> line_json(b' {"event_id": "e1", "n": 1.50}\r')
        b'{"event_id": "e1", "n": 1.50}'

    None for a line with a line feed or carriage return inside (JSON whitespace, e.g. in
    a Pub/Sub message or a pretty-printed event; a line break to every NDJSON reader):
    serialize that event again, so one record is always one line. These are the only
    line-breaking bytes a valid JSON line can hold raw: other control characters are
    only allowed escaped (``\u000b``), and U+2028/U+2029 are escaped here.

        >>> line_json(b'{"event_id": "e1",\n"event": {"type": "x"}}') is None
        True
    """
    data = line.strip()
    # find() is a memchr: cheaper than ``in`` or a regex on lines of hundreds of bytes.
    if data.find(b"\n") >= 0 or data.find(b"\r") >= 0:
        return None
    if _LINE_SEPARATORS(data) is not None:
        data = _escape_line_separators(data)
    return data


def _escape_line_separators(data: bytes) -> bytes:
    return data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


def record_json(item: Packaged) -> bytes:
    """An item's record as JSON: the bytes Package made, else :func:`dumps` of the record."""
    return item.data if item.data is not None else dumps(item.record)


def encode_ndjson(records: Sequence[Any]) -> bytes:
    r"""One JSON object per line, each line ending in ``\\n``."""
    return _ndjson([dumps(r) for r in records])


def _ndjson(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n" if lines else b""


def encode_batch(
    items: Sequence[Packaged] | Sequence[dict[str, Any]],
    fmt: str,
    schema_name: str = "",
    gzip_level: int = GZIP_LEVEL,
) -> bytes:
    """Encode a batch in ``fmt`` (see the module docstring).

    ``items`` are :class:`Packaged` values (all formats) or bare records (JSON formats).
    ``gzip_level`` (1-9) applies to ``ndjson.gz``.
    """
    if fmt in ("ndjson", "ndjson.gz", "json_array"):
        lines = [record_json(i) if isinstance(i, Packaged) else dumps(i) for i in items]
        if fmt == "json_array":
            return b"[" + b",".join(lines) + b"]"
        text = _ndjson(lines)
        return text if fmt == "ndjson" else gzipio.compress(text, gzip_level)
    if fmt == "avro":
        rows = [
            {
                "event_id": i.event_id,
                "event_type": i.event_type,
                "event_time_ms": i.time_ms,
                "record": record_json(i).decode("utf-8"),
            }
            for i in items
            if isinstance(i, Packaged)
        ]
        if len(rows) != len(items):
            raise ValueError("avro needs Packaged items (event id, type and time)")
        buf = io.BytesIO()
        # A fixed sync marker keeps the bytes deterministic, so a rerun rewrites the same file.
        fastavro.writer(
            buf, _PARSED_AVRO_SCHEMA, rows, codec="deflate", sync_marker=b"telemetry-sync!!"
        )
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
