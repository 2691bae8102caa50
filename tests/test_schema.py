"""One schema model (issue 23): BigQuery tables and lake files share ``rules.schema.Column``.

A declared schema, a schema derived from a packaging template (``schema: auto``) and a
BigQuery table's columns all compile to the same :class:`Column` values, which the
Parquet/CSV/Avro encoders and the BigQuery sinks and checks all read.
"""

from __future__ import annotations

import datetime
import io
import json
from datetime import timezone
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_bigquery import TABLE, connector
from transforms.config import ConfigError, parse_config
from transforms.connectors import bigquery, make_sink
from transforms.connectors.base import DeliveryBatch
from transforms.rules.encode import Encoding
from transforms.rules.records import Packaged
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures
from transforms.rules.schema import (
    BIGQUERY_TYPES,
    SCHEMA_MODES,
    SCHEMA_TYPES,
    Column,
    SchemaError,
    check_template,
    compile_schema,
    derive_file_schema,
    derive_schema,
    schema_spec,
)

# -- one model ------------------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


def _columns(types: list[str]) -> st.SearchStrategy[tuple[Column, ...]]:
    scalar = st.builds(
        Column,
        _names,
        st.sampled_from([t for t in types if t != "RECORD"]),
        st.sampled_from(SCHEMA_MODES),
    )

    def unique(columns: list[Column]) -> tuple[Column, ...]:
        return tuple({c.name: c for c in columns}.values())

    return st.recursive(
        st.lists(scalar, min_size=1, max_size=4).map(unique),
        lambda inner: st.lists(
            st.one_of(
                scalar,
                st.builds(Column, _names, st.just("RECORD"), st.sampled_from(SCHEMA_MODES), inner),
            ),
            min_size=1,
            max_size=4,
        ).map(unique),
        max_leaves=10,
    )


@settings(max_examples=200, deadline=None)
@given(_columns(sorted(set(BIGQUERY_TYPES.values()))))
def test_columns_written_as_a_config_compile_back_to_themselves(
    columns: tuple[Column, ...],
) -> None:
    assert compile_schema(schema_spec(columns), types=BIGQUERY_TYPES) == columns


def test_file_formats_take_only_the_types_they_can_write() -> None:
    with pytest.raises(SchemaError, match=r"schema\[0\].*NUMERIC"):
        compile_schema([{"name": "n", "type": "NUMERIC"}])
    (column,) = compile_schema([{"name": "n", "type": "NUMERIC"}], types=BIGQUERY_TYPES)
    assert column == Column("n", "NUMERIC")
    assert compile_schema([{"name": "n", "type": "integer"}]) == (Column("n", "INT64"),)


def test_a_bigquery_schema_is_compiled_once_into_columns() -> None:
    spec = [
        {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
        {"name": "n", "type": "INTEGER"},
        {"name": "geo", "type": "RECORD", "fields": [{"name": "cc", "type": "STRING"}]},
        {"name": "amount", "type": "NUMERIC", "mode": "repeated"},
    ]
    deliver = connector({"table": TABLE, "schema": spec}).deliver_config
    assert deliver.columns == (
        Column("event_id", "STRING", "REQUIRED"),
        Column("n", "INT64"),
        Column("geo", "RECORD", fields=(Column("cc", "STRING"),)),
        Column("amount", "NUMERIC", "REPEATED"),
    )
    assert connector({"table": TABLE}).deliver_config.columns is None  # auto


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"name": "geo", "type": "RECORD"}, r"schema\[0\]\.fields"),
        ({"name": "n", "type": "INT64", "fields": [{"name": "x", "type": "STRING"}]}, "RECORD"),
    ],
)
def test_a_bigquery_schema_the_model_cannot_use_is_a_config_error(
    field: dict[str, Any], match: str
) -> None:
    # A RECORD with no columns (BigQuery refuses such a table) or columns on a scalar
    # used to pass validation; the schema model refuses them when the config is read.
    with pytest.raises(ConfigError, match=match):
        connector({"table": TABLE, "schema": [field]})


def test_the_derived_bigquery_row_schema_types_a_parquet_file() -> None:
    columns = bigquery.derive_schema("bigquery_row")
    assert all(isinstance(c, Column) for c in columns)
    assert derive_schema("bigquery_row") == columns
    record = {
        "event_id": "e1",
        "event_time": "2025-11-26T06:00:00.123Z",
        "event_day": "2025-11-26",
        "bitrate_kbps": 4500,
        "playhead_sec": 12.5,
        "is_live": True,
    }
    encoded = Encoding("parquet", schema=columns).encode([record])
    assert encoded.refused == ()
    types = {f.name: str(f.type) for f in pq.read_schema(io.BytesIO(encoded.data))}
    assert types["bitrate_kbps"] == "int64" and types["playhead_sec"] == "double"
    assert types["event_time"] == "timestamp[ms, tz=UTC]" and types["event_day"] == "date32[day]"
    assert types["is_live"] == "bool" and types["event_id"] == "string"


_casts = st.sampled_from([None, "int", "float", "bool", "string"])
_formats = st.sampled_from([None, "iso8601", "epoch_ms", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%H"])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,4}(\.[a-z]{1,4})?", fullmatch=True),
        st.tuples(_casts, _formats, st.one_of(st.none(), st.integers(), st.text(max_size=3))),
        min_size=1,
        max_size=6,
    )
)
def test_a_derived_schema_agrees_with_its_template(fields: dict[str, Any]) -> None:
    template: dict[str, Any] = {"fields": {}}
    for key, (cast, fmt, const) in fields.items():
        spec: dict[str, Any] = {"const": const} if const is not None else {"path": "x"}
        if cast:
            spec["cast"] = cast
        if fmt:
            spec["format"] = fmt
        template["fields"][key] = spec
    if any("." in k and k.split(".")[0] in template["fields"] for k in template["fields"]):
        return  # "a" and "a.b" both: the template language's own conflict, not a schema one
    assert check_template(template, derive_schema(template)) == []
    assert bigquery.check_template(template, derive_schema(template)) == []
    files = derive_file_schema(template)
    assert {c.type for c in files} <= set(SCHEMA_TYPES.values())


# -- schema: auto for the lake formats ------------------------------------------------------------

AUTO_TEMPLATE = """{fields: {
        event_id: event_id,
        event_time: {path: event.timestamp, format: iso8601},
        event_day: {path: event.timestamp, format: "%Y-%m-%d"},
        bitrate: {path: fluxdata.bitrate, cast: int},
        playhead: {path: fluxdata.playhead, cast: float},
        live: {path: metadata.live, cast: bool},
        geo.country: {path: metadata.geo.country_code, cast: string}}}"""


def lake_config(tmp_path: Path, deliver: str, package: str | None = AUTO_TEMPLATE) -> str:
    section = f"\n    package: {{template: {package}}}" if package is not None else ""
    return f"""
connectors:
  - id: lake
    type: file{section}
    deliver: {{path: {tmp_path / "out"}, {deliver}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""


def lake_items(records: list[dict[str, Any]]) -> list[Packaged]:
    return [
        Packaged(r["event_id"], None, "heartbeat", r, {"event_id": r["event_id"], "n": n})
        for n, r in enumerate(records)
    ]


def test_schema_auto_types_a_parquet_file_from_the_template(tmp_path: Path) -> None:
    connector = parse_config(lake_config(tmp_path, "format: parquet, schema: auto")).connectors[0]
    sink = make_sink("lake", "file", connector.deliver_config)
    sink.open()
    good = {
        "event_id": "e0",
        "event_time": "2025-11-26T06:00:00.123Z",
        "event_day": "2025-11-26",
        "bitrate": 4500,
        "playhead": 12.5,
        "live": True,
        "geo": {"country": "US"},
    }
    # format: iso8601 passes a value that is no time unchanged: the column refuses it.
    bad = {"event_id": "e1", "event_time": "yesterday", "bitrate": 1}
    batch = DeliveryBatch("lake", "", lake_items([good, bad]))
    outcome = deliver_with_retries(sink, batch, RetryPolicy(sleep=lambda _s: None))
    assert outcome.delivered == 1
    record, letters = settle_failures(batch, outcome, (5.0,), delayed_enabled=True)
    assert record is None
    assert [(d.event_id, d.reason) for d in letters] == [("e1", "format_refused")]
    assert "'event_time'" in letters[0].error and "yesterday" in letters[0].error

    (written,) = (tmp_path / "out").rglob("*.parquet")
    schema = pq.read_schema(written)
    assert {f.name: f.type for f in schema} == {
        "event_id": pa.string(),
        "event_time": pa.timestamp("ms", tz="UTC"),
        "event_day": pa.date32(),
        "bitrate": pa.int64(),
        "playhead": pa.float64(),
        "live": pa.bool_(),
        "geo": pa.struct([pa.field("country", pa.string())]),
    }
    (row,) = pq.read_table(written).to_pylist()
    assert row["event_time"] == datetime.datetime(
        2025, 11, 26, 6, 0, 0, 123000, tzinfo=timezone.utc
    )
    assert row["event_day"] == datetime.date(2025, 11, 26) and row["geo"] == {"country": "US"}


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_schema_auto_is_the_declared_schema_the_template_implies(tmp_path: Path, fmt: str) -> None:
    deliver = parse_config(lake_config(tmp_path, f"format: {fmt}, schema: auto")).connectors[0]
    template = {"fields": yaml.safe_load(AUTO_TEMPLATE)["fields"]}
    assert deliver.deliver_config.encoding().schema == derive_schema(template)


@pytest.mark.parametrize(
    ("deliver", "package", "match"),
    [
        ("format: parquet, schema: auto", None, "package.template"),
        ("format: parquet, schema: auto", "null", "package.template"),
        ("format: csv, schema: auto", '{fields: {"*": {path: fluxdata}}}', "spread"),
        ("format: ndjson, schema: auto", AUTO_TEMPLATE, "schema applies to the formats"),
    ],
)
def test_schema_auto_without_known_columns_is_a_config_error(
    tmp_path: Path, deliver: str, package: str | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(lake_config(tmp_path, deliver, package))


def test_schema_auto_with_a_package_function_is_a_config_error(tmp_path: Path) -> None:
    text = lake_config(tmp_path, "format: parquet, schema: auto").replace(
        "package: {template:", "package: {function: 'json:loads', template:"
    )
    with pytest.raises(ConfigError, match=r"package\.function.*deliver\.schema"):
        parse_config(text)


# -- typed Avro -----------------------------------------------------------------------------------

AVRO_SCHEMA_DECLARED = [
    {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "t", "type": "TIMESTAMP"},
    {"name": "day", "type": "DATE"},
    {"name": "n", "type": "INT64"},
    {"name": "x", "type": "FLOAT64"},
    {"name": "ok", "type": "BOOL"},
    {"name": "extra", "type": "JSON"},
    {"name": "geo", "type": "RECORD", "fields": [{"name": "cc", "type": "STRING"}]},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
]


def read_avro(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reader = fastavro.reader(io.BytesIO(data))
    rows = list(reader)
    assert reader.writer_schema is not None
    return reader.writer_schema, rows


def test_typed_avro_round_trips_against_hand_written_rows() -> None:
    records = [
        {
            "event_id": "e0",
            "t": "2025-11-26T06:00:00.123Z",
            "day": "2025-11-26",
            "n": -(2**63),
            "x": 3,
            "ok": False,
            "extra": {"a": [1, None]},
            "geo": {"cc": "US"},
            "tags": ["a", "ключ"],
        },
        {"event_id": "e1", "t": 1764136800123, "tags": None},
        {"event_id": "e2", "n": "42"},  # text is not an INT64: refused, not guessed
        {"event_id": "e3", "geo": {"cc": "FR", "city": "Paris"}},  # no such field: refused
        {"t": 0},  # REQUIRED event_id missing: refused
    ]
    encoded = Encoding("avro", schema=compile_schema(AVRO_SCHEMA_DECLARED)).encode(records)
    assert [n for n, _ in encoded.refused] == [2, 3, 4]
    assert "'n'" in encoded.refused[0][1] and "'city' in 'geo'" in encoded.refused[1][1]
    schema, rows = read_avro(encoded.data)
    nullable = lambda t: ["null", t]  # noqa: E731
    assert [(f["name"], f["type"]) for f in schema["fields"]] == [
        ("event_id", "string"),
        ("t", nullable({"type": "long", "logicalType": "timestamp-millis"})),
        ("day", nullable({"type": "int", "logicalType": "date"})),
        ("n", nullable("long")),
        ("x", nullable("double")),
        ("ok", nullable("boolean")),
        ("extra", nullable({"type": "string", "sqlType": "JSON"})),
        (
            "geo",
            nullable(
                {
                    "type": "record",
                    "name": "telemetry_delivery.Row.geo",
                    "fields": [{"name": "cc", "type": ["null", "string"], "default": None}],
                }
            ),
        ),
        ("tags", {"type": "array", "items": "string"}),
    ]
    utc = timezone.utc
    assert rows == [
        {
            "event_id": "e0",
            "t": datetime.datetime(2025, 11, 26, 6, 0, 0, 123000, tzinfo=utc),
            "day": datetime.date(2025, 11, 26),
            "n": -(2**63),
            "x": 3.0,
            "ok": False,
            "extra": '{"a":[1,null]}',
            "geo": {"cc": "US"},
            "tags": ["a", "ключ"],
        },
        {
            "event_id": "e1",
            "t": datetime.datetime(2025, 11, 26, 6, 0, 0, 123000, tzinfo=utc),
            "day": None,
            "n": None,
            "x": None,
            "ok": None,
            "extra": None,
            "geo": None,
            "tags": [],
        },
    ]
    again = Encoding("avro", schema=compile_schema(AVRO_SCHEMA_DECLARED)).encode(records)
    assert again == encoded, "same batch, same bytes"


def test_avro_without_a_schema_keeps_the_envelope() -> None:
    records = [{"a": {"b": [1, "x", None]}}, {"ключ": 1.5}]
    items = lake_items([{"event_id": f"e{n}", **r} for n, r in enumerate(records)])
    schema, rows = read_avro(Encoding("avro").encode(items).data)
    assert [f["name"] for f in schema["fields"]] == [
        "event_id",
        "event_type",
        "event_time_ms",
        "record",
    ]
    assert [json.loads(r["record"]) for r in rows] == [i.record for i in items]


# Values each file type takes, and what an Avro reader gives back for them.
_AVRO_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "STRING": st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    "INT64": st.integers(-(2**63), 2**63 - 1),
    "FLOAT64": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-9, 9)),
    "BOOL": st.booleans(),
    "TIMESTAMP": st.integers(-(2**41), 2**41),
    "DATE": st.dates().map(datetime.date.isoformat),
    "JSON": st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=4)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=5,
    ).filter(lambda v: v is not None),  # a null JSON value is the column's null
}


def _read_back(column: Column, value: Any) -> Any:
    """What a reader returns for a value ``column`` took (independent of the encoder)."""
    if column.mode == "REPEATED":
        return [
            _read_back(Column(column.name, column.type, fields=column.fields), v)
            for v in value or []
        ]
    if value is None:
        return None
    if column.type == "RECORD":
        return {c.name: _read_back(c, value.get(c.name)) for c in column.fields}
    if column.type == "TIMESTAMP":
        epoch = datetime.datetime(1970, 1, 1, tzinfo=timezone.utc)
        return epoch + datetime.timedelta(milliseconds=value)
    if column.type == "DATE":
        return datetime.date.fromisoformat(value)
    if column.type == "FLOAT64":
        return float(value)
    return value


@st.composite
def _fitting(draw: st.DrawFn, columns: tuple[Column, ...]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for c in columns:

        def one(c: Column = c) -> Any:
            if c.type == "RECORD":
                return draw(_fitting(c.fields))
            return draw(_AVRO_VALUES[c.type])

        if c.mode == "REPEATED":
            choice = draw(st.sampled_from(["list", "null", "missing"]))
            if choice == "list":
                record[c.name] = [one() for _ in range(draw(st.integers(0, 3)))]
            elif choice == "null":
                record[c.name] = None
        elif c.mode == "REQUIRED" or draw(st.booleans()):
            record[c.name] = one()
        elif draw(st.booleans()):
            record[c.name] = None
    return record


@settings(max_examples=200, deadline=None)
@given(st.data(), _columns(sorted(set(SCHEMA_TYPES.values()))))
def test_every_record_the_schema_accepts_round_trips_through_avro(
    data: st.DataObject, columns: tuple[Column, ...]
) -> None:
    records = data.draw(st.lists(_fitting(columns), min_size=1, max_size=4))
    encoded = Encoding("avro", schema=columns).encode(records)
    assert encoded.refused == ()
    _, rows = read_avro(encoded.data)
    for record, row in zip(records, rows, strict=True):
        for c in columns:
            assert _json_parsed(c, row[c.name]) == _read_back(c, record.get(c.name)), c


def _json_parsed(column: Column, got: Any) -> Any:
    """A read-back value with its JSON columns' text parsed, at any depth."""
    if column.mode == "REPEATED":
        item = Column(column.name, column.type, fields=column.fields)
        return [_json_parsed(item, v) for v in got]
    if got is None:
        return None
    if column.type == "RECORD":
        return {c.name: _json_parsed(c, got[c.name]) for c in column.fields}
    return json.loads(got) if column.type == "JSON" else got


def test_a_file_connector_writes_typed_avro_and_dead_letters_what_does_not_fit(
    tmp_path: Path,
) -> None:
    connector = parse_config(lake_config(tmp_path, "format: avro, schema: auto")).connectors[0]
    sink = make_sink("lake", "file", connector.deliver_config)
    sink.open()
    good = {"event_id": "e0", "bitrate": 4500, "geo": {"country": "US"}}
    bad = {"event_id": "e1", "bitrate": "fast"}
    batch = DeliveryBatch("lake", "", lake_items([good, bad]))
    outcome = deliver_with_retries(sink, batch, RetryPolicy(sleep=lambda _s: None))
    _, letters = settle_failures(batch, outcome, (5.0,), delayed_enabled=True)
    assert outcome.delivered == 1
    assert [(d.event_id, d.reason) for d in letters] == [("e1", "format_refused")]
    (written,) = (tmp_path / "out").rglob("*.avro")
    _, rows = read_avro(written.read_bytes())
    assert [(r["event_id"], r["bitrate"], r["geo"]) for r in rows] == [
        ("e0", 4500, {"country": "US"})
    ]


@pytest.mark.parametrize(
    ("name", "match"), [("a-b", "'a-b'"), ("9lives", "'9lives'"), ("ключ", "'ключ'")]
)
def test_a_name_avro_cannot_hold_is_a_config_error(tmp_path: Path, name: str, match: str) -> None:
    deliver = f'format: avro, schema: [{{name: "{name}", type: STRING}}]'
    with pytest.raises(ConfigError, match=f"{match}.*Avro"):
        parse_config(lake_config(tmp_path, deliver, package=None))
    parse_config(lake_config(tmp_path, deliver.replace("avro", "parquet"), package=None))
