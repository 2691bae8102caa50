"""Parquet row groups of about N MB (issue 23 item 2): ``deliver.parquet_row_group_mb``.

A row group's size is what the file itself records for it: Parquet's
``RowGroup.total_byte_size`` (``pq.ParquetFile(f).metadata.row_group(i).total_byte_size``),
the encoded bytes of its pages before the page codec. The property, for random batches,
sizes and codecs: cutting the batch from its first row on, each row group is the fewest
rows that reach N MB, so

- every row group but the last is at least N MB;
- every row group without its last row is under N MB: no group is more than N MB plus
  what its last row adds;
- and what one row adds is bounded: at most that row's own one-row group (its values,
  once in the dictionary page, once as the page's min and max, plus page headers) plus
  ``rows / 4 + 8`` bytes per column (a new dictionary value may widen every index of
  the page by one bit: ``rows / 8`` bit-packed, up to as much again in run headers, and
  a few bytes of level runs and varints). This holds within one data page, as here (the
  sizes drawn stay far below the writer's 1 MB pages).

Readers are never the job's own code: pyarrow and DuckDB read the files back.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.generate_events import generate
from tests.jobs import run_job
from tests.test_formats import config, same
from transforms.config import ConfigError, parse_config
from transforms.rules.encode import Encoding, ParquetCompression, compile_schema

MB = 2**20

# -- batches with rows of very different sizes, and values that repeat ----------------------------

# A small alphabet, so values repeat and dictionary encoding shapes the sizes.
_words = st.text(alphabet="abcé€", max_size=300)
_cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _words,
    st.lists(_words, max_size=3),
)
_rows = st.fixed_dictionaries(
    {"id": st.integers(0, 10**6)},
    optional={
        "a": _cells,
        "b": _words,
        "c": st.dictionaries(st.sampled_from("xyz"), _words, max_size=3),
        "d": st.integers(0, 3),
    },
)
_batches = st.lists(_rows, min_size=1, max_size=80)
_codecs: st.SearchStrategy[ParquetCompression] = st.sampled_from(["zstd", "snappy", "gzip", "none"])


def group_size(table: pa.Table, codec: str) -> int:
    """``total_byte_size`` of ``table`` written alone as one row group with ``codec``."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=table.num_rows,
        compression="NONE" if codec == "none" else codec,
        write_statistics=True,
    )
    return pq.read_metadata(pa.BufferReader(sink.getvalue())).row_group(0).total_byte_size


def check_row_groups(data: bytes, whole: bytes, limit: int, codec: str) -> list[int]:
    """Assert the row-group property of ``data``; ``whole`` is the batch as one row group.

    Returns the rows of each row group.
    """
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    table = pq.read_table(io.BytesIO(whole))
    got = pq.read_table(io.BytesIO(data))
    assert got.equals(table), "the same rows, in order, whatever the row groups"
    if pq.read_metadata(io.BytesIO(whole)).row_group(0).total_byte_size <= limit:
        assert data == whole, "a batch under N MB is one row group, as without the option"
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(rows) == table.num_rows and all(rows)
    start = 0
    for i, (size, k) in enumerate(zip(sizes, rows, strict=True)):
        group = table.slice(start, k)
        # The row group is the one a writer makes of these rows alone, so the test may
        # measure the same rows without their last one the same way.
        assert group_size(group, codec) == size, i
        if i < len(sizes) - 1:
            assert size >= limit, (i, size, limit)
        if k > 1:
            assert group_size(group.slice(0, k - 1), codec) < limit, (i, k, limit)
        one_row = group_size(group.slice(k - 1, 1), codec)
        assert size <= limit + one_row + meta.num_columns * (k // 4 + 8), (i, size, limit)
        start += k
    return rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches, st.integers(1, 40_000), _codecs)
def test_each_row_group_is_the_fewest_rows_that_reach_n_mb(
    records: list[dict[str, Any]], limit: int, codec: ParquetCompression
) -> None:
    encoding = Encoding("parquet", parquet_compression=codec, parquet_row_group_mb=limit / MB)
    encoded = encoding.encode(records)
    assert encoded.refused == ()
    assert encoding.encode(records).data == encoded.data, "same batch, same bytes"
    whole = Encoding("parquet", parquet_compression=codec).encode(records).data
    assert pq.ParquetFile(io.BytesIO(whole)).metadata.num_row_groups == 1, "omitted: one"
    check_row_groups(encoded.data, whole, limit, codec)


DECLARED = [
    {"name": "id", "type": "INT64", "mode": "REQUIRED"},
    {"name": "b", "type": "STRING"},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    {"name": "geo", "type": "RECORD", "fields": [{"name": "city", "type": "STRING"}]},
]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.integers(0, 10**6)},
            optional={
                "b": _words,
                "tags": st.lists(_words, max_size=4),
                "geo": st.fixed_dictionaries({}, optional={"city": _words}),
            },
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 20_000),
)
def test_declared_struct_and_list_columns_split_into_row_groups(
    records: list[dict[str, Any]], limit: int
) -> None:
    schema = compile_schema(DECLARED)
    data = Encoding("parquet", schema=schema, parquet_row_group_mb=limit / MB).encode(records)
    whole = Encoding("parquet", schema=schema).encode(records).data
    meta = pq.ParquetFile(io.BytesIO(data.data)).metadata
    assert pq.read_table(io.BytesIO(data.data)).equals(pq.read_table(io.BytesIO(whole)))
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    assert all(size >= limit for size in sizes[:-1]), (sizes, limit)


def duckdb_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[str], int]:
    """The rows DuckDB reads from ``path`` in file order, its JSON columns, its row groups."""
    with duckdb.connect() as con:
        cursor = con.execute(
            "SELECT * EXCLUDE (file_row_number) FROM read_parquet(?, file_row_number = true) "
            "ORDER BY file_row_number",
            [str(path)],
        )
        json_columns = [d[0] for d in cursor.description if str(d[1]) == "JSON"]
        rows = cursor.fetchall()
        (groups,) = con.execute(
            "SELECT count(DISTINCT row_group_id) FROM parquet_metadata(?)", [str(path)]
        ).fetchone() or (0,)
    return rows, json_columns, groups


def assert_duckdb_reads(path: Path, records: list[dict[str, Any]], row_groups: int) -> None:
    rows, json_columns, groups = duckdb_rows(path)
    assert groups == row_groups
    columns = list(dict.fromkeys(k for r in records for k in r))
    assert len(rows) == len(records)
    for record, row in zip(records, rows, strict=True):
        for name, got in zip(columns, row, strict=True):
            want = record.get(name)
            if got is not None and name in json_columns:
                got = json.loads(got)
            assert same(got, want), (name, got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches, st.integers(1, 20_000))
def test_duckdb_reads_back_exactly_the_records(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]], limit: int
) -> None:
    data = Encoding("parquet", parquet_row_group_mb=limit / MB).encode(records).data
    path = tmp_path_factory.mktemp("rg") / "batch.parquet"
    path.write_bytes(data)
    groups = pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups
    assert_duckdb_reads(path, records, groups)


def test_player_events_in_row_groups_of_a_twentieth_of_a_mb(tmp_path: Path) -> None:
    events = [orjson.loads(line) for line in generate(1000, seed=3)]
    limit = math.ceil(0.05 * MB)
    data = Encoding("parquet", parquet_row_group_mb=0.05).encode(events).data
    whole = Encoding("parquet").encode(events).data
    rows = check_row_groups(data, whole, limit, "zstd")
    # ~240 KB as one row group; cut, each group keeps its own dictionaries, so more groups
    # than 240 / 52 KB.
    assert 5 <= len(rows) <= 8, rows
    path = tmp_path / "events.parquet"
    path.write_bytes(data)
    assert_duckdb_reads(path, events, len(rows))


def test_the_option_is_checked_when_an_encoding_is_made() -> None:
    for bad in (0, -1.0, math.nan, math.inf, True, 2.0**21):
        with pytest.raises(ValueError, match="parquet_row_group_mb"):
            Encoding("parquet", parquet_row_group_mb=bad)
    assert Encoding("parquet", parquet_row_group_mb=1e-9).encode([{"a": 1}]).data


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "s3", "gcs"])
def test_config_takes_the_row_group_size(tmp_path: Path, kind: str) -> None:
    text = config(tmp_path, "format: parquet, parquet_row_group_mb: 0.5", kind)
    deliver = parse_config(text).connectors[0].deliver_config
    assert deliver.parquet_row_group_mb == 0.5
    assert deliver.encoding().parquet_row_group_mb == 0.5
    omitted = parse_config(config(tmp_path, "format: parquet")).connectors[0].deliver_config
    assert omitted.parquet_row_group_mb is None
    assert omitted.encoding().parquet_row_group_mb is None
    whole = parse_config(config(tmp_path, "format: parquet, parquet_row_group_mb: 64"))
    assert whole.connectors[0].deliver_config.parquet_row_group_mb == 64


@pytest.mark.parametrize(
    ("deliver", "match"),
    [
        ("format: parquet, parquet_row_group_mb: 0", "greater than 0"),
        ("format: parquet, parquet_row_group_mb: -2", "greater than 0"),
        ("format: parquet, parquet_row_group_mb: .nan", "finite"),
        ("format: parquet, parquet_row_group_mb: .inf", "finite"),
        ("format: parquet, parquet_row_group_mb: 1e300", "less than or equal"),
        ("format: parquet, parquet_row_group_mb: big", "number"),
        ("format: parquet, parquet_row_group_mb: true", "number"),
        ("format: parquet, parquet_row_group_mb: [1]", "number"),
        ("format: ndjson, parquet_row_group_mb: 1", "applies to format parquet"),
        ("format: csv.gz, parquet_row_group_mb: 1", "applies to format parquet"),
    ],
)
def test_config_refuses_a_bad_row_group_size(tmp_path: Path, deliver: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_config(config(tmp_path, deliver))
    assert "parquet_row_group_mb" in str(caught.value)


# -- the whole job --------------------------------------------------------------------------------


def test_the_job_writes_parquet_in_row_groups_that_read_back(tmp_path: Path) -> None:
    events = [orjson.loads(line) for line in generate(1200, seed=11)]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out = tmp_path / "out"
    (tmp_path / "c.yaml").write_text(f"""
connectors:
  - id: lake
    type: file
    deliver:
      path: {out}/lake
      format: parquet
      parquet_row_group_mb: 0.05
      batch: {{max_events: 500}}
dead_letter: {{path: {tmp_path / "dead_letter"}}}
""")
    code, summary = run_job(tmp_path / "c.yaml", source, tmp_path / "summary.json")
    assert code == 0 and summary["balanced"], summary
    (row,) = summary["connectors"]
    assert row["delivered"] == len(events) and row["dead_lettered"] == 0
    files = sorted((out / "lake").rglob("*.parquet"))
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
    assert max(groups) > 1, groups
    for f in files:
        meta = pq.ParquetFile(f).metadata
        sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        assert all(size >= 0.05 * MB for size in sizes[:-1]), (f, sizes)
    by_id = {e["event_id"]: e for e in events}
    read: list[dict[str, Any]] = []
    for f, n in zip(files, groups, strict=True):
        ids = pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist()
        batch = [by_id[i] for i in ids]
        assert_duckdb_reads(f, batch, n)
        read.extend(batch)
    assert sorted(e["event_id"] for e in read) == sorted(by_id)
