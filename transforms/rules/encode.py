r"""Encodings of a batch of records: the bytes a file, object or request body holds.

    >>> encode_batch([{"a": 1}, {"a": 2}], "ndjson", schema_name="x")
    b'{"a":1}\n{"a":2}\n'

Formats (the connector's ``deliver.format``):

==============  ============  ==============================================================
format          extension     content
==============  ============  ==============================================================
``ndjson``      .ndjson       one JSON object per line
``json_array``  .json         one JSON array of objects
``csv``         .csv          RFC 4180 CSV with a header row; see :func:`encode_csv`
``avro``        .avro         Avro object container (fastavro, deflate); see :func:`avro_schema`
``parquet``     .parquet      Parquet, one row group per batch or per N MB: :class:`Encoding`
==============  ============  ==============================================================

The text formats (:data:`TEXT_FORMATS`) also come compressed: the name with ``.gz``
(gzip, deterministic bytes: no mtime) or ``.zst`` (zstd: one frame with its content size
and a checksum), e.g. ``json_array.gz`` written as ``.json.gz``. A connector says it as
``format: json_array, compression: gzip`` (:mod:`transforms.rules.compress`).

JSON is written with orjson (an event a connector passes on unchanged is sent as its
input line instead: :func:`line_json`). U+2028 and U+2029 are escaped (``\\u2028``) so that the
output is also safe for JavaScript and for line splitters that treat them as newlines.

Parquet and CSV are columnar: their columns come from a declared ``schema`` (the shape
BigQuery uses, see :func:`compile_schema`), or, without one, from the batch itself (every
key of the batch, in first-seen order). Avro with a ``schema`` writes typed records
(:func:`avro_schema`); without one, an envelope that holds each record as JSON text
(:data:`AVRO_SCHEMA`). A record that does not fit the declared schema is
*refused* on its own (:attr:`Encoded.refused`): the connector writes the others and makes
the refused one a dead letter. The same batch always encodes to the same bytes, whatever
the format (object names derive from the batch's event ids, and create-only writes
count a name already taken as the same batch written before).

Plain Python, no Beam import.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from transforms.rules import gzipio
from transforms.rules.compress import SUFFIXES, format_name, split_format
from transforms.rules.events import to_epoch_ms
from transforms.rules.records import Packaged, record_of
from transforms.rules.schema import Column

# Re-exported: the file formats' importers (tests, bench/formats.py) name them from here.
from transforms.rules.schema import SchemaError as SchemaError
from transforms.rules.schema import compile_schema as compile_schema

TEXT_FORMATS = {"ndjson": ".ndjson", "json_array": ".json", "csv": ".csv"}
"""The formats that take a ``compression``, and their extension without one."""

_TEXT_TYPES = {
    "ndjson": "application/x-ndjson",
    "json_array": "application/json",
    "csv": "text/csv",
}
_CODEC_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}

FORMATS = {
    **{
        format_name(base, codec): ext + SUFFIXES.get(codec, "")
        for base, ext in TEXT_FORMATS.items()
        for codec in ("none", *SUFFIXES)
    },
    "avro": ".avro",
    "parquet": ".parquet",
}
"""Each format and the file extension it is written with: ``{"ndjson.gz": ".ndjson.gz",
"json_array.zst": ".json.zst", ...}``."""

CONTENT_TYPES = {
    **{
        format_name(base, codec): _CODEC_TYPES.get(codec, kind)
        for base, kind in _TEXT_TYPES.items()
        for codec in ("none", *SUFFIXES)
    },
    "avro": "application/avro",
    "parquet": "application/vnd.apache.parquet",
}
"""The ``Content-Type`` of each format's objects: a compressed one is ``application/gzip``
or ``application/zstd``, with no ``Content-Encoding``: the object *is* a gzip or zstd file
(with ``Content-Encoding: gzip`` GCS would decompress it on download)."""

SCHEMA_FORMATS = (*(f for f in FORMATS if f.startswith("csv")), "parquet", "avro")
"""The formats a ``schema`` applies to (their columns; Avro's typed records)."""

GZIP_LEVEL = 6
"""Default gzip compression level (the gzip tool's default; a good size/CPU balance).

A ``file`` connector can set its own (``deliver.gzip_level``, 1-9): level 1 compresses
in about 40% of level 6's CPU and writes files about 1.8x larger (bench/RESULTS.md)."""

ZSTD_LEVEL = 3
"""Default zstd level (zstd's own default). ``deliver.zstd_level`` takes 1-19; 20-22
need far more memory per compressor and are not offered. Measured figures per level are in
bench/RESULTS.md."""

ParquetCompression = Literal["zstd", "snappy", "gzip", "none"]
"""Values of ``deliver.parquet_compression``: the page codec inside a Parquet file."""

PARQUET_COMPRESSIONS: tuple[str, ...] = get_args(ParquetCompression)

PARQUET_ROW_GROUP_MB_MAX = 2**20
"""The largest ``deliver.parquet_row_group_mb``: 1 TiB, far above any batch (``batch.max_bytes``
is at most 5 GiB), so a larger size could only mean "one row group per batch", which
omitting the option already says."""

_MB = 2**20
"""A MB of ``parquet_row_group_mb``: 2**20 bytes, as in Spark's and Hive's 128 MB blocks."""

PARQUET_COMPRESSION: ParquetCompression = "zstd"
"""Default Parquet codec. Every reader the lake users name (Spark 3, Trino, Athena,
BigQuery external tables, DuckDB, pyarrow) reads zstd pages, and on event batches they
are a fifth to a third smaller than snappy's for about a quarter more CPU (bench/RESULTS.md).
Choose ``snappy`` for readers that predate zstd."""

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
"""The Avro schema without a declared ``schema``: typed envelope fields plus the whole
record as JSON text (any record shape fits)."""

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
    zstd_level: int = ZSTD_LEVEL,
    parquet_compression: ParquetCompression = PARQUET_COMPRESSION,
    schema: tuple[Column, ...] | None = None,
    parquet_row_group_mb: float | None = None,
) -> bytes:
    """Encode a batch in ``fmt`` (see the module docstring and :class:`Encoding`).

    ``items`` are :class:`Packaged` values (all formats) or bare records (all but avro).
    ``gzip_level`` (1-9) applies to the ``.gz`` formats, ``zstd_level`` (1-19) to the
    ``.zst`` ones (``json_array.zst`` too); ``parquet_row_group_mb`` to parquet.

    Raises:
        EncodeError: when ``schema`` refuses a record (:meth:`Encoding.encode` instead
            writes the others and names the refused ones).
    """
    encoded = Encoding(
        fmt, gzip_level, zstd_level, parquet_compression, schema, parquet_row_group_mb
    ).encode(items)
    if encoded.refused:
        n, why = encoded.refused[0]
        raise EncodeError(f"record {n} of the batch: {why}")
    return encoded.data


class EncodeError(ValueError):
    """A record the format's declared schema cannot hold."""


class _Refused(Exception):
    """A record the schema cannot hold; the message says which field and why."""


_EXCERPT = 60  # characters of a value a refusal shows
_INT64 = (-(2**63), 2**63 - 1)
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _excerpt(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _where(path: tuple[str, ...]) -> str:
    """``('geo', 'city')`` as "'city' in 'geo'": the field first, then where it sits."""
    return " in ".join(repr(p) for p in reversed(path))


def _json_text(value: Any) -> str:
    return dumps(value).decode("utf-8")


def _scalar(kind: str) -> Callable[[Any], Any]:
    """How one non-null value of ``kind`` is converted; ``ValueError`` if it does not fit."""

    def string(v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError("not text")
        return v

    def int64(v: Any) -> Any:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError("not an integer")
        if not _INT64[0] <= v <= _INT64[1]:
            raise ValueError("outside INT64")
        return v

    def float64(v: Any) -> Any:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError("not a number")
        return float(v)

    def boolean(v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("not true or false")
        return v

    def timestamp(v: Any) -> Any:
        ms = None if isinstance(v, bool) else to_epoch_ms(v)
        if ms is None or not _INT64[0] <= ms <= _INT64[1]:
            raise ValueError("not epoch milliseconds or ISO-8601 text")
        return ms

    def date(v: Any) -> Any:
        if not isinstance(v, str) or not _DATE_TEXT.fullmatch(v):
            raise ValueError("not YYYY-MM-DD text")
        return datetime.date.fromisoformat(v)

    def json_text(v: Any) -> Any:
        try:
            return _json_text(v)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise ValueError(f"not writable as JSON ({exc})") from None

    return {
        "STRING": string,
        "INT64": int64,
        "UINT64": lambda v: v,  # inferred only: already checked
        "FLOAT64": float64,
        "BOOL": boolean,
        "TIMESTAMP": timestamp,
        "DATE": date,
        "JSON": json_text,
    }[kind]


def _converter(column: Column, path: tuple[str, ...]) -> Callable[[Any], Any]:
    """What a value of ``column`` becomes in Arrow; raises :class:`_Refused` if it does not fit."""
    path = (*path, column.name)
    label = column.type if column.mode != "REPEATED" else f"REPEATED {column.type}"
    if column.type == "RECORD":
        convert = _record_converter(column.fields, path)
    else:
        scalar = _scalar(column.type)

        def convert(value: Any) -> Any:
            try:
                return scalar(value)
            except ValueError as exc:
                raise _Refused(
                    f"field {_where(path)} ({label}): {exc}: {_excerpt(value)}"
                ) from None

    if column.mode == "REPEATED":

        def repeated(value: Any) -> Any:
            if value is None:
                return []
            if not isinstance(value, list):
                raise _Refused(f"field {_where(path)} ({label}): not a list: {_excerpt(value)}")
            if any(v is None for v in value):
                raise _Refused(f"field {_where(path)} ({label}): a list item is null")
            return [convert(v) for v in value]

        return repeated
    if column.mode == "REQUIRED":

        def required(value: Any) -> Any:
            if value is None:
                raise _Refused(f"field {_where(path)} ({label}) is required: missing or null")
            return convert(value)

        return required
    return lambda value: None if value is None else convert(value)


def _record_converter(
    fields: tuple[Column, ...], path: tuple[str, ...]
) -> Callable[[Any], dict[str, Any]]:
    converters = [(c.name, _converter(c, path)) for c in fields]
    names = {c.name for c in fields}

    def convert(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            what = f"field {_where(path)} (RECORD)" if path else "the record"
            raise _Refused(f"{what}: not an object: {_excerpt(value)}")
        for key in value:
            if key not in names:
                raise _Refused(f"field {_where((*path, key))} is not in the schema")
        return {name: conv(value.get(name)) for name, conv in converters}

    return convert


def _arrow_type(column: Column) -> pa.DataType:
    if column.type == "RECORD":
        item: pa.DataType = pa.struct([_arrow_field(c) for c in column.fields])
    else:
        item = _ARROW_TYPES[column.type]
    return pa.list_(item) if column.mode == "REPEATED" else item


def _arrow_field(column: Column) -> pa.Field:
    return pa.field(column.name, _arrow_type(column), nullable=column.mode != "REQUIRED")


_ARROW_TYPES: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "UINT64": pa.uint64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("ms", tz="UTC"),
    "DATE": pa.date32(),
    "JSON": pa.json_(pa.string()),
}


# -- schemas inferred from a batch ---------------------------------------------------------------

_EXACT_IN_DOUBLE = 2**53


def infer_columns(records: Sequence[dict[str, Any]]) -> tuple[Column, ...]:
    """The columns of a batch without a declared schema: every key, in first-seen order.

    A column's type comes from its non-null values: all ``true``/``false``: BOOL; all
    integers: INT64, or UINT64 when some pass int64 and none is negative; numbers whose
    integers a double holds exactly (up to 2**53): FLOAT64; all text: STRING; nothing but
    nulls: STRING. Anything else (objects, lists, a mix of types, integers no single
    integer type holds) is JSON: each value's JSON text, so nothing is lost and every
    value of the column reads back with one JSON parse.

        >>> [(c.name, c.type) for c in infer_columns([{"a": 1, "b": {"c": 2}}, {"a": 2.5}])]
        [('a', 'FLOAT64'), ('b', 'JSON')]

    Batches differ, so files written from different batches may differ in columns and
    types (a key every value of which is null in one batch is a STRING there): declare a
    ``schema`` for one fixed schema across files.
    """
    values: dict[str, list[Any]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                values.setdefault(key, []).append(value)
            else:
                values.setdefault(key, [])
    return tuple(Column(key, _infer_kind(vals)) for key, vals in values.items())


def _infer_kind(values: list[Any]) -> str:
    types = {type(v) for v in values}
    if not types or types == {str}:
        return "STRING"
    if types == {bool}:
        return "BOOL"
    if types == {int}:
        low, high = min(values), max(values)
        if _INT64[0] <= low and high <= _INT64[1]:
            return "INT64"
        return "UINT64" if low >= 0 else "JSON"
    if types <= {int, float} and all(
        -_EXACT_IN_DOUBLE <= v <= _EXACT_IN_DOUBLE for v in values if type(v) is int
    ):
        return "FLOAT64"
    return "JSON"


# -- batches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A batch's bytes, and the records the declared schema refused (by position).

    ``refused`` holds ``(position, why)`` pairs, in batch order; ``data`` holds every
    other record, in batch order (empty bytes when all were refused).
    """

    data: bytes
    refused: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Encoding:
    r"""How a connector encodes its batches: the format and its options.

        >>> Encoding("ndjson").encode([{"a": 1}]).data
        b'{"a":1}\n'

    Parquet files hold one row group per batch (a batch is at most ``batch.max_events``
    records, a few MB), or with ``parquet_row_group_mb`` row groups of about that many MB
    (:func:`encode_parquet`). Columns follow the declared ``schema`` (nested ``RECORD`` fields
    as struct columns) or, without one, :func:`infer_columns`, where nested objects and
    lists are JSON text (Parquet's JSON logical type): typed structs need a declared
    schema, since one batch's guess at a struct would differ from the next batch's.
    ``parquet_compression`` is the page codec (:data:`PARQUET_COMPRESSIONS`).
    """

    format: str
    gzip_level: int = GZIP_LEVEL
    zstd_level: int = ZSTD_LEVEL
    parquet_compression: ParquetCompression = PARQUET_COMPRESSION
    schema: tuple[Column, ...] | None = None
    parquet_row_group_mb: float | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(
                f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}"
            )
        if self.parquet_compression not in PARQUET_COMPRESSIONS:
            raise ValueError(
                f"unknown parquet_compression {self.parquet_compression!r}; expected one of "
                + ", ".join(PARQUET_COMPRESSIONS)
            )
        mb = self.parquet_row_group_mb
        if mb is not None and (
            isinstance(mb, bool)
            or not isinstance(mb, (int, float))
            or not 0 < mb <= PARQUET_ROW_GROUP_MB_MAX
        ):
            raise ValueError(
                f"parquet_row_group_mb must be a number above 0 and at most "
                f"{PARQUET_ROW_GROUP_MB_MAX} (MB), or None for one row group per batch: {mb!r}"
            )

    @property
    def extension(self) -> str:
        """The file extension of this format, e.g. ``.csv.zst``."""
        return FORMATS[self.format]

    def encode(self, items: Sequence[Packaged] | Sequence[dict[str, Any]]) -> Encoded:
        """Encode one batch; records the declared schema refuses are left out and named."""
        fmt = self.format
        base, codec = split_format(fmt)
        if base in ("ndjson", "json_array"):
            lines = [record_json(i) if isinstance(i, Packaged) else dumps(i) for i in items]
            if base == "json_array":
                return Encoded(self._compress(b"[" + b",".join(lines) + b"]", codec))
            return Encoded(self._compress(_ndjson(lines), codec))
        if fmt == "avro" and self.schema is None:
            return Encoded(_avro(items))
        records = [record_of(i) if isinstance(i, Packaged) else i for i in items]
        if fmt == "avro":
            data, refused = encode_avro(records, self.schema or ())
            return Encoded(data, refused)
        if base == "csv":
            data, refused = encode_csv(records, self.schema)
            return Encoded(self._compress(data, codec) if data else b"", refused)
        mb = self.parquet_row_group_mb
        row_group_bytes = None if mb is None else max(1, math.ceil(mb * _MB))
        data, refused = encode_parquet(
            records, self.schema, self.parquet_compression, row_group_bytes
        )
        return Encoded(data, refused)

    def _compress(self, data: bytes, codec: str) -> bytes:
        if codec == "gzip":
            return gzipio.compress(data, self.gzip_level)
        if codec == "zstd":
            return zstd_compress(data, self.zstd_level)
        return data


def zstd_compress(data: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """``data`` as one zstd frame with its content size and a checksum.

    Single-threaded, so equal data gives equal bytes for a given zstd version (zstd's
    multi-threaded mode may cut the input differently).
    """
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)


def _avro(items: Sequence[Packaged] | Sequence[dict[str, Any]]) -> bytes:
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
    return _avro_bytes(_PARSED_AVRO_SCHEMA, rows)


_AVRO_SYNC = b"telemetry-sync!!"
"""A fixed sync marker keeps Avro bytes deterministic, so a rerun rewrites the same file."""

_AVRO_TYPES: dict[str, Any] = {
    "STRING": "string",
    "INT64": "long",
    "FLOAT64": "double",
    "BOOL": "boolean",
    "TIMESTAMP": {"type": "long", "logicalType": "timestamp-millis"},
    "DATE": {"type": "int", "logicalType": "date"},
    # BigQuery's Avro loads read sqlType JSON as a JSON column; other readers see a string.
    "JSON": {"type": "string", "sqlType": "JSON"},
}
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AVRO_ROW = "telemetry_delivery.Row"


def avro_schema(columns: Sequence[Column], where: str = "schema") -> dict[str, Any]:
    """The Avro record schema of rows of ``columns`` (typed Avro, ``format: avro``).

        >>> avro_schema([Column("n", "INT64", "REQUIRED"), Column("t", "TIMESTAMP")])["fields"]
        [{'name': 'n', 'type': 'long'}, {'name': 't', 'type': ['null', \
{'type': 'long', 'logicalType': 'timestamp-millis'}], 'default': None}]

    ``INT64`` is ``long``, ``FLOAT64`` ``double``, ``BOOL`` ``boolean``, ``STRING``
    ``string``, ``TIMESTAMP`` ``long`` ``timestamp-millis``, ``DATE`` ``int`` ``date``,
    ``JSON`` ``string`` (its JSON text, ``sqlType: JSON`` as BigQuery reads it), ``RECORD``
    a nested ``record`` named by its path (``telemetry_delivery.Row.geo``). ``NULLABLE``
    is ``["null", T]`` with default null, ``REQUIRED`` ``T``, ``REPEATED`` an ``array``
    of ``T`` (null becomes an empty array).

    Raises:
        SchemaError: a name Avro cannot hold (letters, digits and ``_``, not starting with
            a digit), naming the field's position.
    """
    return {"type": "record", "name": _AVRO_ROW, "fields": _avro_fields(columns, where, _AVRO_ROW)}


def _avro_fields(columns: Sequence[Column], where: str, parent: str) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    for n, column in enumerate(columns):
        at = f"{where}[{n}]"
        if not _AVRO_NAME.fullmatch(column.name):
            raise SchemaError(
                f"{at}: {column.name!r} is not a name Avro can hold (letters, digits and _, "
                "not starting with a digit): rename it in the template, or use parquet or csv"
            )
        kind: Any
        if column.type == "RECORD":
            name = f"{parent}.{column.name}"
            inner = _avro_fields(column.fields, f"{at}.fields", name)
            kind = {"type": "record", "name": name, "fields": inner}
        elif column.type in _AVRO_TYPES:
            kind = _AVRO_TYPES[column.type]
        else:
            raise SchemaError(f"{at} ({column.name!r}): Avro files have no {column.type} type")
        if column.mode == "REPEATED":
            fields.append({"name": column.name, "type": {"type": "array", "items": kind}})
        elif column.mode == "REQUIRED":
            fields.append({"name": column.name, "type": kind})
        else:
            fields.append({"name": column.name, "type": ["null", kind], "default": None})
    return fields


def encode_avro(
    records: Sequence[Any], schema: tuple[Column, ...]
) -> tuple[bytes, tuple[tuple[int, str], ...]]:
    """Typed Avro (deflate) of the records that fit ``schema``, and the refused ``(position, why)``.

    Values are checked as for Parquet (:func:`compile_schema`); empty bytes when every
    record was refused.

        >>> import fastavro
        >>> data, refused = encode_avro([{"n": 1}, {"n": "x"}], (Column("n", "INT64"),))
        >>> [r for r in fastavro.reader(io.BytesIO(data))], refused[0][0]
        ([{'n': 1}], 1)
    """
    parsed = fastavro.parse_schema(avro_schema(schema))
    _, rows, refused, converted = _objects(records, schema)
    assert converted is not None  # a declared schema converts every column
    names = [c.name for c in schema]
    positions = [n for n, _ in rows]
    values = [dict(zip(names, cells, strict=True)) for cells in zip(*converted, strict=True)]
    try:
        data = _avro_bytes(parsed, values)
    except _NOT_AVRO:
        # Rare (text UTF-8 cannot encode, such as a lone surrogate): find the records at
        # fault one by one, so only they are refused.
        kept = []
        for n, value in zip(positions, values, strict=True):
            try:
                _avro_bytes(parsed, [value])
            except _NOT_AVRO as exc:
                refused.append((n, f"not writable as Avro: {type(exc).__name__}: {exc}"))
            else:
                kept.append(value)
        values = kept
        data = _avro_bytes(parsed, values)
    refused.sort()
    return (data if values else b""), tuple(refused)


_NOT_AVRO = (UnicodeError, OverflowError, TypeError, ValueError)
"""What fastavro raises for a value it cannot write (a lone surrogate in text)."""


def _avro_bytes(parsed: Any, rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, parsed, rows, codec="deflate", sync_marker=_AVRO_SYNC)
    return buf.getvalue()


_NOT_WRITABLE = (pa.ArrowException, UnicodeError, OverflowError, TypeError, ValueError)
"""What building an Arrow array raises for a value it cannot store (a lone surrogate)."""


def _objects(
    records: Sequence[Any], schema: tuple[Column, ...] | None
) -> tuple[
    tuple[Column, ...],
    list[tuple[int, dict[str, Any]]],
    list[tuple[int, str]],
    list[list[Any]] | None,
]:
    """The columns, the records to write, the refusals so far, and converted values.

    With a declared schema every record is checked here, and the last item holds each
    column's converted values, aligned with the (position, record) pairs; without one
    the columns come from the batch and the last item is None.
    """
    refused: list[tuple[int, str]] = []
    dicts: list[tuple[int, dict[str, Any]]] = []
    for n, record in enumerate(records):
        if isinstance(record, dict):
            dicts.append((n, record))
        else:
            refused.append((n, f"the record is not an object: {_excerpt(record)}"))
    if schema is None:
        columns = infer_columns([r for _, r in dicts])
        if not columns:
            # Records with no keys at all: a Parquet row needs a column, and a CSV row of
            # no cells is a blank line most readers skip. Refused rather than lost unseen.
            refused.extend((n, "the record has no field to write as a column") for n, _ in dicts)
            return columns, [], refused, None
        return columns, dicts, refused, None
    bad = _unknown_keys(schema, dicts)
    values = []
    for column in schema:
        values.append(_column_values(column, dicts, bad))
    refused.extend(bad.items())
    keep = [j for j, (n, _) in enumerate(dicts) if n not in bad]
    if len(keep) < len(dicts):
        dicts = [dicts[j] for j in keep]
        values = [[col[j] for j in keep] for col in values]
    return schema, dicts, refused, values


def _unknown_keys(
    schema: tuple[Column, ...], dicts: list[tuple[int, dict[str, Any]]]
) -> dict[int, str]:
    """Records with a key the schema does not have: position -> why (the first such key)."""
    names = {c.name for c in schema}
    return {
        n: f"field {next(k for k in r if k not in names)!r} is not in the schema"
        for n, r in dicts
        if not names.issuperset(r)
    }


def _column_values(
    column: Column, dicts: list[tuple[int, dict[str, Any]]], bad: dict[int, str]
) -> list[Any]:
    """One declared column's values, converted, aligned with ``dicts``.

    A record whose value does not fit joins ``bad``; a record keeps its first refusal
    (unknown keys first, then the columns in schema order).
    """
    got = [r.get(column.name) for _, r in dicts]
    if _fits_as_is(column, got):
        return got
    convert = _converter(column, ())
    out: list[Any] = []
    for (n, _), value in zip(dicts, got, strict=True):
        if n in bad:
            out.append(None)
            continue
        try:
            out.append(convert(value))
        except _Refused as exc:
            bad[n] = str(exc)
            out.append(None)
    return out


_AS_IS = {
    "STRING": frozenset({str}),
    "INT64": frozenset({int}),
    "BOOL": frozenset({bool}),
    "FLOAT64": frozenset({float, int}),
}
"""Scalar kinds whose Python values Arrow takes unchanged, when they are of these types."""


def _fits_as_is(column: Column, values: list[Any]) -> bool:
    """Whether a column's values need no conversion (the common case, checked in bulk)."""
    allowed = _AS_IS.get(column.type)
    if allowed is None or column.mode == "REPEATED":
        return False
    kinds = set(map(type, values))
    if type(None) in kinds:
        if column.mode == "REQUIRED":
            return False
        kinds.discard(type(None))
    if not kinds <= allowed:
        return False
    if int in kinds:
        ints = [v for v in values if type(v) is int]
        low, high = _INT64 if column.type == "INT64" else (-_EXACT_IN_DOUBLE, _EXACT_IN_DOUBLE)
        return low <= min(ints) and max(ints) <= high
    return True


def encode_parquet(
    records: Sequence[Any],
    schema: tuple[Column, ...] | None = None,
    compression: str = PARQUET_COMPRESSION,
    row_group_bytes: int | None = None,
) -> tuple[bytes, tuple[tuple[int, str], ...]]:
    """One Parquet file of the records that fit, and the refused ``(position, why)``.

    >>> import pyarrow.parquet as pq
    >>> data, refused = encode_parquet([{"a": 1}, {"a": 2}])
    >>> pq.read_table(io.BytesIO(data)).to_pylist(), refused
    ([{'a': 1}, {'a': 2}], ())

    The records are one row group, or with ``row_group_bytes`` several, in order, each
    the fewest records whose row group reaches that size (the last one: what is left).
    A row group's size is the one Parquet records for it (``RowGroup.total_byte_size``):
    its pages as encoded (dictionaries, bit-packed indices, plain values, page headers)
    before the page codec compresses them. So every row group but the last is at least
    ``row_group_bytes``, and at most that plus what its last record added; the same
    records and options always cut the same way (:func:`parquet_row_groups`).

    >>> records = [{"n": n, "city": c} for n, c in enumerate(["Lyon", "Paris", "Oslo"] * 33)]
    >>> data, _ = encode_parquet(records, None, "none", row_group_bytes=500)
    >>> meta = pq.read_metadata(io.BytesIO(data))
    >>> [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(3)]
    [(37, 506), (37, 506), (25, 398)]
    """
    columns, rows, refused, converted = _objects(records, schema)
    positions = [n for n, _ in rows]
    values: list[list[Any]] = []
    for j, column in enumerate(columns):
        if converted is not None:
            values.append(converted[j])
            continue
        got = [r.get(column.name) for _, r in rows]
        if column.type == "JSON":
            got = _json_cells(got, positions, refused)
        values.append(got)
    failed = {n for n, _ in refused}
    if failed:
        keep = [j for j, n in enumerate(positions) if n not in failed]
        positions = [positions[j] for j in keep]
        values = [[col[j] for j in keep] for col in values]
    fields = [_arrow_field(c) for c in columns]
    try:
        table = _table(fields, values)
    except _NOT_WRITABLE:
        # Rare (text Arrow cannot store, such as a lone surrogate): find the records at
        # fault one by one, so only they are refused.
        keep = []
        for j, n in enumerate(positions):
            try:
                _table(fields, [[col[j]] for col in values])
            except _NOT_WRITABLE as exc:
                refused.append((n, f"not writable as Parquet: {type(exc).__name__}: {exc}"))
            else:
                keep.append(j)
        positions = [positions[j] for j in keep]
        table = _table(fields, [[col[j] for j in keep] for col in values])
    refused.sort()
    if not positions:
        return b"", tuple(refused)
    whole = _parquet_file(table, None, compression)
    if row_group_bytes is None:
        return whole, tuple(refused)
    (whole_size,) = _group_sizes(whole)
    if whole_size <= row_group_bytes:
        return whole, tuple(refused)
    groups = parquet_row_groups(
        table,
        row_group_bytes,
        lambda rows: _group_sizes(_parquet_file(rows, None, compression))[0],
        per_row=whole_size / table.num_rows,
    )
    return _parquet_file(table, groups, compression), tuple(refused)


def _parquet_file(table: pa.Table, groups: Sequence[int] | None, compression: str) -> bytes:
    """``table`` as a Parquet file with row groups of ``groups`` rows (None: all in one)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink,
        table.schema,
        compression="NONE" if compression == "none" else compression,
        write_statistics=True,
    ) as writer:
        start = 0
        for rows in groups or (table.num_rows,):
            writer.write_table(table.slice(start, rows), row_group_size=rows)
            start += rows
    return sink.getvalue().to_pybytes()


def _group_sizes(data: bytes) -> list[int]:
    """``total_byte_size`` of each row group of a Parquet file."""
    meta = pq.read_metadata(pa.BufferReader(data))
    return [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]


def parquet_row_groups(
    table: pa.Table, limit: int, size: Callable[[pa.Table], int], per_row: float = 0.0
) -> list[int]:
    """The rows of each row group when ``table`` is cut into row groups of ``limit`` bytes.

    From the first row on, each row group is the fewest rows whose ``size`` (a row
    group's encoded bytes, measured by writing it) reaches ``limit``; the last one
    holds what is left. Rows of 10 bytes each, cut at 25 bytes::

        >>> parquet_row_groups(pa.table({"a": range(7)}), 25, lambda t: 10 * t.num_rows)
        [3, 3, 1]

    Sizes are measured, never added up: dictionaries make a row's bytes depend on the
    rows before it. A search keeps two row counts, ``lo`` under the limit (0 rows: 0
    bytes) and ``hi`` reaching it, until they are next to each other, so each cut is
    exact, ``size(hi - 1 rows) < limit <= size(hi rows)``, even where sizes do not grow
    steadily with rows. The first guess is the previous row group's length (the first
    row group's: ``limit / per_row``, if given); the next ones follow the line through
    the last two sizes measured (the first time: ``per_row``, else the previous row
    group's bytes per row); after a few such guesses, halving (or doubling, while no
    count reaches the limit) takes over, so a row group takes O(log rows) writes at
    worst, and two or three on even data.
    """
    if limit < 1:
        raise ValueError(f"a row group's size must be at least 1 byte: {limit}")
    groups: list[int] = []
    start, total = 0, table.num_rows
    guess = math.ceil(limit / per_row) if per_row > 0 else 1
    while start < total:
        left = total - start
        lo = 0  # a row count under the limit: 0 rows are 0 bytes
        hi, hi_size = left + 1, 0  # one reaching it; left + 1: none known yet
        last: tuple[int, int] | None = None
        steps = 0
        while hi - lo > 1:
            rows = max(lo + 1, min(guess, hi - 1))
            got = size(table.slice(start, rows))
            if got >= limit:
                hi, hi_size = rows, got
            else:
                lo = rows
            if lo == left:
                break  # all that is left stays under the limit: the last row group
            slope = per_row
            if last is not None and last[0] != rows:
                slope = (got - last[1]) / (rows - last[0])
            last = (rows, got)
            steps += 1
            if steps <= _MODELLED_STEPS and slope > 0:
                # The fewest rows reaching the limit, were sizes a straight line of that slope.
                if got < limit:
                    guess = rows + math.ceil((limit - got) / slope)
                else:
                    guess = rows - math.floor((got - limit) / slope)
            else:
                guess = 2 * lo if hi > left else (lo + hi) // 2
        cut = min(hi, left)
        groups.append(cut)
        if hi <= left:
            per_row = hi_size / hi
        guess = cut  # the next row group is most likely as long
        start += cut
    return groups


_MODELLED_STEPS = 4
"""Guesses per row group taken from the sizes measured so far, before halving (or, while
no count reaches the limit, doubling) takes over and bounds the search."""


def _json_cells(
    values: list[Any], positions: list[int], refused: list[tuple[int, str]]
) -> list[Any]:
    """An inferred JSON column's values as JSON text (null stays null)."""
    out: list[Any] = []
    for n, value in zip(positions, values, strict=True):
        try:
            out.append(None if value is None else _json_text(value))
        except (TypeError, orjson.JSONEncodeError) as exc:
            refused.append((n, f"not writable as JSON: {exc}"))
            out.append(None)
    return out


def _table(fields: list[pa.Field], values: list[list[Any]]) -> pa.Table:
    arrays = [pa.array(col, type=f.type) for f, col in zip(fields, values, strict=True)]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _cell(value: Any) -> str:
    """A value as a CSV cell: text as is, null empty, anything else its JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return _json_text(value)


def encode_csv(
    records: Sequence[Any], schema: tuple[Column, ...] | None = None
) -> tuple[bytes, tuple[tuple[int, str], ...]]:
    r"""RFC 4180 CSV of the records that fit, and the refused ``(position, why)``.

        >>> encode_csv([{"a": "x,y", "b": {"c": 1}}, {"b": None, "c": True}])
        (b'a,b,c\r\n"x,y","{""c"":1}",\r\n,,true\r\n', ())

    UTF-8 without a byte order mark; a header row with the column names, then one row
    per record; every row ends in CRLF; a cell is quoted when it holds a comma, a quote
    (doubled) or a line break. Cells: text as is, numbers as JSON writes them,
    ``true``/``false``, objects and lists as their JSON text, null and missing keys
    empty (so null and ``""`` read back alike). Columns are the declared schema's
    top-level fields, which also check every value (a refused record is left out), or
    every key of the batch in first-seen order.
    """
    columns, rows, refused, _ = _objects(records, schema)
    names = [c.name for c in columns]
    # Cells are written from the records as given (a declared schema only checks them):
    # 4500 stays "4500", never the FLOAT64 column's "4500.0".
    fine = [n for n, _ in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    try:
        writer.writerows([_cell(records[n].get(name)) for name in names] for n in fine)
        body = buffer.getvalue().encode("utf-8")
    except UnicodeEncodeError:
        # Rare (a lone surrogate): write row by row, refusing the rows at fault.
        body, fine = _csv_rows(records, names, fine, refused)
    refused.sort()
    return (body if fine else b""), tuple(refused)


def _csv_rows(
    records: Sequence[Any], names: list[str], fine: list[int], refused: list[tuple[int, str]]
) -> tuple[bytes, list[int]]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    out = [buffer.getvalue().encode("utf-8")]
    kept = []
    for n in fine:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(records[n].get(name)) for name in names])
        try:
            out.append(buffer.getvalue().encode("utf-8"))
        except UnicodeEncodeError as exc:
            refused.append((n, f"not writable as UTF-8: {exc}"))
        else:
            kept.append(n)
    return b"".join(out), kept
