"""Parquet, CSV and zstd formats (issue 23): every format read back by an independent reader.

Readers used here are never the job's own code: ``pyarrow.parquet.read_table``, the
``csv`` module, ``zstandard`` and ``gzip``. Records are hostile: unicode keys and values,
keys with dots, commas and quotes, nested objects and lists, integers up to 2**64 - 1,
nulls, mixed types in one key (NaN never occurs: records come from JSON).
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.generate_events import generate
from tests.conftest import make_event
from tests.jobs import run_job
from transforms.config import ConfigError, parse_config
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, PartialDeliveryError
from transforms.rules.encode import (
    FORMATS,
    ZSTD_LEVEL,
    Encoding,
    SchemaError,
    compile_schema,
    encode_batch,
)
from transforms.rules.events import event_time_ms
from transforms.rules.records import Packaged
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures

pytest_plugins = ["tests.standins.object_stores"]

# -- hostile records ------------------------------------------------------------------------------

_text = st.text(
    st.characters(exclude_categories=("Cs",)), max_size=12
)  # JSON has no lone surrogates
_keys = st.one_of(
    _text, st.sampled_from(["a.b", "event.type", "", "x,y", 'q"', "ключ", "line\r\nbreak"])
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what the job reads exactly (README, Limits)
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_records = st.dictionaries(_keys, _values, max_size=6)
_batches = st.lists(_records, min_size=1, max_size=8)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: a bool is never a number, and 1 equals 1.0 only as numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def columns_of(records: list[dict[str, Any]]) -> list[str]:
    """Every key of the batch, in first-seen order."""
    return list(dict.fromkeys(k for r in records for k in r))


def packaged(records: list[dict[str, Any]]) -> list[Packaged]:
    return [
        Packaged(f"e{n}", None, "heartbeat", r, {"event_id": f"e{n}"})
        for n, r in enumerate(records)
    ]


# -- parquet, schema inferred per batch ----------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches, st.sampled_from(["snappy", "zstd", "gzip", "none"]))
def test_parquet_round_trips_hostile_records(records: list[dict[str, Any]], codec: str) -> None:
    encoding = Encoding("parquet", parquet_compression=codec)
    encoded = encoding.encode(records)
    if not columns_of(records):  # a row needs a column: nothing to write, nothing lost
        assert [n for n, _ in encoded.refused] == list(range(len(records)))
        assert encoded.data == b""
        return
    assert encoded.refused == ()
    assert encoding.encode(records).data == encoded.data, "same batch, same bytes"
    table = pq.read_table(io.BytesIO(encoded.data))
    assert table.column_names == columns_of(records)
    assert table.num_rows == len(records)
    assert pq.read_metadata(io.BytesIO(encoded.data)).num_row_groups == 1
    rows = table.to_pylist()
    json_columns = {f.name for f in table.schema if isinstance(f.type, pa.JsonType)}
    for record, row in zip(records, rows, strict=True):
        for key in table.column_names:
            got = row[key]
            if key not in record or record[key] is None:
                assert got is None, key
            elif key in json_columns:
                assert same(json.loads(got), record[key]), key
            else:
                assert same(got, record[key]), key


@settings(max_examples=100, deadline=None)
@given(_batches)
def test_duckdb_reads_the_same_parquet_values(records: list[dict[str, Any]]) -> None:
    # A second, independent Parquet reader (C++, not Arrow's). DuckDB renames columns it
    # cannot take as named (an empty name, names equal but for case), so compare by position.
    data = Encoding("parquet").encode(records).data
    if not data:
        return
    expected = [tuple(r.values()) for r in pq.read_table(io.BytesIO(data)).to_pylist()]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "batch.parquet"
        path.write_bytes(data)
        with duckdb.connect() as con:
            got = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert all(map(same, row, want)), (row, want)


def test_duckdb_reads_a_declared_schema_as_typed_columns(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    path.write_bytes(Encoding("parquet", schema=compile_schema(SCHEMA)).encode([GOOD]).data)
    with duckdb.connect() as con:
        cursor = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        types = {d[0]: str(d[1]) for d in cursor.description}
        (row,) = cursor.fetchall()
    assert types == {
        "event_id": "VARCHAR",
        "bitrate": "BIGINT",
        "playhead": "DOUBLE",
        "live": "BOOLEAN",
        "at": "TIMESTAMP WITH TIME ZONE",
        "day": "DATE",
        "geo": "STRUCT(country_code VARCHAR)",
        "tags": "VARCHAR[]",
        "extra": "JSON",
    }
    assert row[0:4] == ("e1", 4500, 12.0, True)
    assert row[4].isoformat() == "2025-11-26T06:00:00.123000+00:00"
    assert row[5:8] == (datetime.date(2025, 11, 26), {"country_code": "US"}, ["a", "b"])
    assert json.loads(row[8]) == {"k": [1, None]}


def test_parquet_infers_plain_types_and_keeps_the_rest_as_json() -> None:
    records = [
        {"s": "a", "i": 1, "f": 1, "b": True, "u": 2**64 - 1, "n": None, "o": {"k": [1]}},
        {"s": "b", "i": -(2**63), "f": 2.5, "b": False, "u": 0, "mix": "x"},
        {"mix": 1, "big_and_neg": -1},
        {"big_and_neg": 2**64 - 1, "f": 2**53},
    ]
    table = pq.read_table(io.BytesIO(Encoding("parquet").encode(records).data))
    types = {f.name: f.type for f in table.schema}
    assert types["s"] == pa.string() and types["i"] == pa.int64() and types["b"] == pa.bool_()
    assert types["f"] == pa.float64()  # ints that a double holds exactly, mixed with floats
    assert types["u"] == pa.uint64()  # non-negative, past int64
    assert types["n"] == pa.string()  # all null: a string column, which every reader takes
    for json_column in ("o", "mix", "big_and_neg"):
        assert isinstance(types[json_column], pa.JsonType), json_column
    assert table.column("big_and_neg").to_pylist() == [None, None, "-1", str(2**64 - 1)]


def test_parquet_of_packaged_events_and_record_bytes() -> None:
    events = [make_event(event_id=f"e{i}", ts=1764136800000 + i) for i in range(3)]
    items = [
        Packaged(e["event_id"], event_time_ms(e), "heartbeat", None, e, orjson.dumps(e))
        for e in events
    ]
    rows = pq.read_table(io.BytesIO(encode_batch(items, "parquet"))).to_pylist()
    assert [r["event_id"] for r in rows] == ["e0", "e1", "e2"]
    assert [json.loads(r["metadata"]) for r in rows] == [e["metadata"] for e in events]


# -- parquet, declared schema ---------------------------------------------------------------------

SCHEMA = [
    {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "bitrate", "type": "INT64"},
    {"name": "playhead", "type": "FLOAT64"},
    {"name": "live", "type": "BOOL"},
    {"name": "at", "type": "TIMESTAMP"},
    {"name": "day", "type": "DATE"},
    {"name": "geo", "type": "RECORD", "fields": [{"name": "country_code", "type": "STRING"}]},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    {"name": "extra", "type": "JSON"},
]

GOOD = {
    "event_id": "e1",
    "bitrate": 4500,
    "playhead": 12,
    "live": True,
    "at": "2025-11-26T06:00:00.123Z",
    "day": "2025-11-26",
    "geo": {"country_code": "US"},
    "tags": ["a", "b"],
    "extra": {"k": [1, None]},
}


def test_declared_schema_gives_typed_columns() -> None:
    schema = compile_schema(SCHEMA)
    records = [GOOD, {"event_id": "e2", "at": 1764136800123}]
    encoded = Encoding("parquet", schema=schema).encode(records)
    assert encoded.refused == ()
    table = pq.read_table(io.BytesIO(encoded.data))
    types = {f.name: f.type for f in table.schema}
    assert not table.schema.field("event_id").nullable
    assert types["bitrate"] == pa.int64() and types["playhead"] == pa.float64()
    assert types["at"] == pa.timestamp("ms", tz="UTC") and types["day"] == pa.date32()
    assert types["geo"] == pa.struct([pa.field("country_code", pa.string())])
    assert types["tags"] == pa.list_(pa.string()) and isinstance(types["extra"], pa.JsonType)
    first, second = table.to_pylist()
    assert first["at"].isoformat() == "2025-11-26T06:00:00.123000+00:00"
    assert first["day"].isoformat() == "2025-11-26"
    assert first["geo"] == {"country_code": "US"} and first["tags"] == ["a", "b"]
    assert json.loads(first["extra"]) == {"k": [1, None]}
    assert second["at"].isoformat() == "2025-11-26T06:00:00.123000+00:00"
    assert second["bitrate"] is None and second["tags"] == [] and second["geo"] is None


BAD_VALUES = [
    ("bitrate", "fast"),
    ("bitrate", True),
    ("bitrate", 2**63),
    ("bitrate", 1.5),
    ("playhead", "12"),
    ("live", 1),
    ("at", "yesterday"),
    ("day", "26/11/2025"),
    ("geo", {"country_code": 1}),
    ("geo", {"city": "x"}),
    ("geo", "US"),
    ("tags", "a"),
    ("tags", ["a", 1]),
    ("event_id", None),
    ("not_in_schema", 1),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(BAD_VALUES)), min_size=1, max_size=12))
def test_a_value_the_schema_refuses_refuses_only_its_event(
    plan: list[tuple[str, Any] | None],
) -> None:
    records = [GOOD if bad is None else {**GOOD, bad[0]: bad[1]} for bad in plan]
    records = [
        {**r, "event_id": f"e{n}"} if r.get("event_id") else r for n, r in enumerate(records)
    ]
    for fmt in ("parquet", "csv"):
        encoded = Encoding(fmt, schema=compile_schema(SCHEMA)).encode(records)
        want_bad = [n for n, bad in enumerate(plan) if bad is not None]
        assert [n for n, _ in encoded.refused] == want_bad, fmt
        for n, why in encoded.refused:
            bad = plan[n]
            assert bad is not None and repr(bad[0]) in why, why
        good = [r["event_id"] for n, r in enumerate(records) if plan[n] is None]
        if not good:
            assert encoded.data == b"", fmt
        elif fmt == "parquet":
            assert pq.read_table(io.BytesIO(encoded.data)).column("event_id").to_pylist() == good
        else:
            rows = list(csv.DictReader(io.StringIO(encoded.data.decode(), newline="")))
            assert [r["event_id"] for r in rows] == good


@pytest.mark.parametrize("fmt", ["parquet", "csv", "csv.zst"])
@pytest.mark.parametrize("declared", [False, True])
def test_text_no_encoder_can_write_refuses_only_its_record(fmt: str, declared: bool) -> None:
    # A lone surrogate never comes out of JSON, but a custom package function could make one.
    schema = compile_schema([{"name": "a", "type": "STRING"}]) if declared else None
    records: list[Any] = [{"a": "ok"}, {"a": "bad \ud800"}, "not an object", {"a": "fine"}]
    encoded = Encoding(fmt, schema=schema).encode(records)
    assert [n for n, _ in encoded.refused] == [1, 2]
    data = encoded.data
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(data)).column("a").to_pylist() == ["ok", "fine"]
    else:
        if fmt.endswith(".zst"):
            data = zstandard.ZstdDecompressor().decompress(data)
        assert read_csv(data) == [["a"], ["ok"], ["fine"]]


def test_bad_schemas_are_refused_with_the_path() -> None:
    with pytest.raises(SchemaError, match=r"schema\[0\].*INT65"):
        compile_schema([{"name": "a", "type": "INT65"}])
    with pytest.raises(SchemaError, match=r"schema\[1\].*'a' twice"):
        compile_schema([{"name": "a", "type": "INT64"}, {"name": "a", "type": "STRING"}])
    with pytest.raises(SchemaError, match=r"schema\[0\]\.fields\[0\].*mode"):
        compile_schema(
            [
                {
                    "name": "g",
                    "type": "RECORD",
                    "fields": [{"name": "x", "type": "STRING", "mode": "X"}],
                }
            ]
        )
    with pytest.raises(SchemaError, match=r"schema\[0\].*fields"):
        compile_schema([{"name": "g", "type": "RECORD"}])
    with pytest.raises(SchemaError, match=r"schema\[0\].*unknown key.*typo"):
        compile_schema([{"name": "a", "type": "STRING", "typo": 1}])


# -- csv ------------------------------------------------------------------------------------------


def cell_matches(cell: str, value: Any) -> bool:
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, str):
        return cell == value
    if isinstance(value, int):
        return int(cell) == value
    if isinstance(value, float):
        return float(cell) == value
    return same(json.loads(cell), value)


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))


@settings(max_examples=300, deadline=None)
@given(_batches)
def test_csv_round_trips_hostile_records(records: list[dict[str, Any]]) -> None:
    if not columns_of(records):  # a row needs a column (a blank line is no CSV row)
        refused = Encoding("csv").encode(packaged(records)).refused
        assert [n for n, _ in refused] == list(range(len(records)))
        return
    data = encode_batch(packaged(records), "csv")
    assert data == encode_batch(packaged(records), "csv"), "same batch, same bytes"
    assert data.endswith(b"\r\n")  # RFC 4180: every record, the last included, ends in CRLF
    header, *rows = read_csv(data)
    assert header == columns_of(records)
    assert len(rows) == len(records)
    for record, row in zip(records, rows, strict=True):
        assert len(row) == len(header)
        for key, cell in zip(header, row, strict=True):
            assert cell_matches(cell, record.get(key)), (key, cell, record.get(key))
    assert gzip.decompress(encode_batch(packaged(records), "csv.gz")) == data
    assert (
        zstandard.ZstdDecompressor().decompress(encode_batch(packaged(records), "csv.zst")) == data
    )


def test_csv_quotes_as_rfc_4180_says() -> None:
    records = [{"a": 'say "hi"', "b": "x,y", "c": "two\nlines", "d": {"k": "v"}, "e": None}]
    assert encode_batch(records, "csv") == (
        b'a,b,c,d,e\r\n"say ""hi""","x,y","two\nlines","{""k"":""v""}",\r\n'
    )


def test_csv_with_a_schema_has_its_columns_in_order() -> None:
    schema = compile_schema([{"name": "b", "type": "INT64"}, {"name": "a", "type": "STRING"}])
    data = Encoding("csv", schema=schema).encode([{"a": "x"}, {"b": 2, "a": "y"}]).data
    assert data == b"b,a\r\n,x\r\n2,y\r\n"


# -- zstd -----------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(_batches, st.integers(1, 19))
def test_ndjson_zst_round_trips_at_every_level(records: list[dict[str, Any]], level: int) -> None:
    items = packaged(records)
    data = encode_batch(items, "ndjson.zst", zstd_level=level)
    assert data == encode_batch(items, "ndjson.zst", zstd_level=level), "same batch, same bytes"
    assert zstandard.ZstdDecompressor().decompress(data) == encode_batch(items, "ndjson")
    lines = zstandard.ZstdDecompressor().decompress(data).splitlines()
    assert [orjson.loads(line) for line in lines] == records


def test_zstd_default_level_and_frame() -> None:
    assert ZSTD_LEVEL == 3
    data = encode_batch([{"a": 1}], "ndjson.zst")
    params = zstandard.get_frame_parameters(data)
    assert params.content_size == len(b'{"a":1}\n') and params.has_checksum


def test_every_new_format_has_an_extension() -> None:
    assert FORMATS["parquet"] == ".parquet" and FORMATS["csv"] == ".csv"
    assert FORMATS["ndjson.zst"] == ".ndjson.zst" and FORMATS["csv.gz"] == ".csv.gz"
    assert FORMATS["csv.zst"] == ".csv.zst"


# -- config ---------------------------------------------------------------------------------------


def config(tmp_path: Path, deliver: str, kind: str = "file") -> str:
    where = f"path: {tmp_path / 'out'}" if kind == "file" else "bucket: telemetry"
    return f"""
connectors:
  - id: lake
    type: {kind}
    deliver: {{{where}, {deliver}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""


SCHEMA_YAML = (
    "schema: [{name: event_id, type: STRING, mode: REQUIRED}, {name: bitrate, type: INT64}]"
)


@pytest.mark.parametrize("kind", ["file", "s3", "gcs"])
def test_config_takes_the_new_formats_and_options(tmp_path: Path, kind: str) -> None:
    deliver = (
        parse_config(
            config(tmp_path, f"format: parquet, parquet_compression: gzip, {SCHEMA_YAML}", kind)
        )
        .connectors[0]
        .deliver_config
    )
    assert deliver.format == "parquet" and deliver.parquet_compression == "gzip"
    assert [c["name"] for c in deliver.schema] == ["event_id", "bitrate"]
    for fmt in ("csv", "csv.gz", "csv.zst", "ndjson.zst"):
        got = parse_config(config(tmp_path, f"format: {fmt}, zstd_level: 19", kind))
        assert got.connectors[0].deliver_config.zstd_level == 19


@pytest.mark.parametrize(
    ("deliver", "match"),
    [
        ("format: parquet, parquet_compression: lz4", "parquet_compression"),
        ("format: ndjson.zst, zstd_level: 0", "zstd_level"),
        ("format: ndjson.zst, zstd_level: 23", "zstd_level"),
        ("format: parquet, schema: [{name: a, type: INT65}]", "INT65"),
        (f"format: ndjson, {SCHEMA_YAML}", "schema"),
    ],
)
def test_config_refuses_bad_format_options(tmp_path: Path, deliver: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(config(tmp_path, deliver))


# -- sinks: per-event dead letters ----------------------------------------------------------------


def typed_items(bitrates: list[Any]) -> list[Packaged]:
    out = []
    for n, bitrate in enumerate(bitrates):
        record = {"event_id": f"e{n}", "bitrate": bitrate}
        out.append(Packaged(f"e{n}", None, "heartbeat", record, {"event_id": f"e{n}", "n": n}))
    return out


def test_file_sink_dead_letters_only_the_event_the_schema_refuses(tmp_path: Path) -> None:
    deliver = parse_config(config(tmp_path, f"format: parquet, {SCHEMA_YAML}")).connectors[0]
    sink = make_sink("lake", "file", deliver.deliver_config)
    sink.open()
    batch = DeliveryBatch("lake", "", typed_items([1, "fast", 3]))
    with pytest.raises(PartialDeliveryError) as raised:
        sink.write(batch)
    failures = raised.value.item_failures(batch.items)
    assert [(f.index, f.retryable) for f in failures] == [(1, False)]
    assert "'bitrate'" in failures[0].reason and "fast" in failures[0].reason
    (written,) = (tmp_path / "out").rglob("*.parquet")
    assert raised.value.delivered.name == str(written) and raised.value.delivered.events == 2
    assert pq.read_table(written).column("event_id").to_pylist() == ["e0", "e2"]

    outcome = deliver_with_retries(sink, batch, RetryPolicy(sleep=lambda _s: None))
    assert outcome.delivered == 2 and [(i.event_id, a) for i, _e, a in outcome.failed] == [
        ("e1", 1)
    ]
    record, letters = settle_failures(batch, outcome, (5.0,), delayed_enabled=True)
    assert record is None  # a value the schema refuses is not worth a retry
    assert [(d.event_id, d.reason, d.event) for d in letters] == [
        ("e1", "format_refused", {"event_id": "e1", "n": 1})
    ]


def test_file_sink_writes_nothing_when_every_event_is_refused(tmp_path: Path) -> None:
    deliver = parse_config(config(tmp_path, f"format: csv, {SCHEMA_YAML}")).connectors[0]
    sink = make_sink("lake", "file", deliver.deliver_config)
    sink.open()
    batch = DeliveryBatch("lake", "", typed_items(["a", "b"]))
    outcome = deliver_with_retries(sink, batch, RetryPolicy(sleep=lambda _s: None))
    assert outcome.delivered == 0 and [i.event_id for i, _e, _a in outcome.failed] == ["e0", "e1"]
    assert (outcome.writes, outcome.bytes, outcome.names) == (0, 0, [])  # no file, no write
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.csv"))


CONTENT_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "csv.gz": "application/gzip",
    "csv.zst": "application/zstd",
    "ndjson.zst": "application/zstd",
}


def decode(fmt: str, data: bytes) -> list[dict[str, Any]]:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if fmt.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompress(data)
    elif fmt.endswith(".gz"):
        data = gzip.decompress(data)
    if fmt.startswith("csv"):
        return [
            {k: orjson.loads(v) if k == "bitrate" else v for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(data.decode(), newline=""))
        ]
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("object_store", ["s3", "gcs", "azure_blob"], indirect=True)
@pytest.mark.parametrize("fmt", sorted(CONTENT_TYPES))
def test_object_stores_write_the_new_formats(object_store: Any, tmp_path: Path, fmt: str) -> None:
    bucket = object_store.new_bucket()
    deliver = {**object_store.deliver(bucket), "format": fmt}
    schema = f", {SCHEMA_YAML}" if fmt.startswith(("csv", "parquet")) else ""
    body = ", ".join(f"{k}: '{v}'" for k, v in deliver.items()) + schema
    cfg = f"""
connectors:
  - id: lake
    type: {object_store.kind}
    deliver: {{{body}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""
    sink = make_sink("lake", object_store.kind, parse_config(cfg).connectors[0].deliver_config)
    sink.open()
    try:
        batch = DeliveryBatch("lake", "p/", typed_items([1, 2, 3]))
        result = sink.write(batch)
        assert result.events == 3 and not result.existed
        again = sink.write(batch)  # same batch, same name: nothing new in the store
        assert again.existed or not object_store.create_only
    finally:
        sink.close()
    (name,) = object_store.names(bucket)
    assert name.startswith("p/lake-") and name.endswith(FORMATS[fmt])
    assert object_store.content_type(bucket, name) == CONTENT_TYPES[fmt]
    rows = decode(fmt, object_store.read(bucket, name))
    assert [(r["event_id"], r["bitrate"]) for r in rows] == [("e0", 1), ("e1", 2), ("e2", 3)]


# -- the whole job ------------------------------------------------------------------------------


def test_the_job_writes_lake_formats_and_dead_letters_only_refused_events(tmp_path: Path) -> None:
    events = [orjson.loads(line) for line in generate(300, seed=7)]
    bad = {e["event_id"] for e in events[::37]}
    for e in events:
        if e["event_id"] in bad:
            e.setdefault("fluxdata", {})["rendition_video_bitrate_kbps"] = "fast"
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out = tmp_path / "out"
    fields = (
        "{event_id: event_id, kind: event.type, bitrate: fluxdata.rendition_video_bitrate_kbps}"
    )
    (tmp_path / "c.yaml").write_text(f"""
connectors:
  - id: lake
    type: file
    package: {{template: {{fields: {fields}}}}}
    deliver:
      path: {out}/lake
      format: parquet
      batch: {{max_events: 50}}
      schema:
        - {{name: event_id, type: STRING, mode: REQUIRED}}
        - {{name: kind, type: STRING}}
        - {{name: bitrate, type: INT64}}
  - id: raw_zst
    type: file
    deliver: {{path: {out}/raw, format: ndjson.zst, batch: {{max_events: 50}}}}
  - id: flat_csv
    type: file
    package: {{template: {{fields: {fields}}}}}
    deliver: {{path: {out}/csv, format: csv.gz, batch: {{max_events: 50}}}}
dead_letter: {{path: {tmp_path / "dead_letter"}}}
""")
    code, summary = run_job(tmp_path / "c.yaml", source, tmp_path / "summary.json")
    assert code == 0 and summary["balanced"], summary
    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["lake"]["delivered"] == len(events) - len(bad)
    assert rows["lake"]["dead_lettered"] == len(bad)
    assert rows["raw_zst"]["delivered"] == rows["flat_csv"]["delivered"] == len(events)

    lake = [
        r for f in sorted((out / "lake").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    assert sorted(r["event_id"] for r in lake) == sorted(
        e["event_id"] for e in events if e["event_id"] not in bad
    )
    letters = [
        orjson.loads(line)
        for f in sorted((tmp_path / "dead_letter").rglob("*.ndjson"))
        for line in f.read_bytes().splitlines()
    ]
    assert sorted(d["event_id"] for d in letters) == sorted(bad)
    assert {(d["connector"], d["stage"], d["reason"]) for d in letters} == {
        ("lake", "deliver", "format_refused")
    }
    assert all("'bitrate'" in d["error"] and "fast" in d["error"] for d in letters)

    raw = [
        orjson.loads(line)
        for f in sorted((out / "raw").rglob("*.ndjson.zst"))
        for line in zstandard.ZstdDecompressor().decompress(f.read_bytes()).splitlines()
    ]
    assert sorted(raw, key=lambda e: e["event_id"]) == sorted(events, key=lambda e: e["event_id"])
    flat = [
        row
        for f in sorted((out / "csv").rglob("*.csv.gz"))
        for row in csv.DictReader(io.StringIO(gzip.decompress(f.read_bytes()).decode(), newline=""))
    ]
    assert sorted(r["event_id"] for r in flat) == sorted(e["event_id"] for e in events)
