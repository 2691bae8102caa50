"""``deliver.gzip_level`` of file and object-store connectors: 1-9, default 6, same content."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from isal import igzip
from zlib_ng import gzip_ng

from tests.conftest import make_event
from transforms.config import ConfigError, parse_config
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch
from transforms.rules import gzipio
from transforms.rules.encode import GZIP_LEVEL, encode_batch, encode_ndjson
from transforms.rules.events import event_time_ms
from transforms.rules.records import Packaged


def items(n: int = 300) -> list[Packaged]:
    events = [make_event(event_id=f"e{i}", session_id=f"s{i % 7}") for i in range(n)]
    return [Packaged(e["event_id"], event_time_ms(e), "heartbeat", e, e) for e in events]


def config(tmp_path: Path, level: str) -> str:
    return f"""
connectors:
  - id: archive
    type: file
    deliver: {{path: {tmp_path}, format: ndjson.gz{level}}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""


def test_default_level_is_six_standard_gzip_and_deterministic(tmp_path: Path) -> None:
    batch = items()
    data = encode_batch(batch, "ndjson.gz")
    assert GZIP_LEVEL == 6
    assert data == gzipio.compress(encode_ndjson([i.record for i in batch]), 6)
    assert data == encode_batch(batch, "ndjson.gz")  # equal batches, equal bytes (no mtime)
    assert data[4:8] == b"\0\0\0\0"  # gzip header: mtime 0
    assert gzip.decompress(data) == encode_ndjson([i.record for i in batch])  # standard gzip
    deliver = parse_config(config(tmp_path, "")).connectors[0].deliver_config
    assert deliver.gzip_level == 6


def test_gzip_input_is_read_whole_across_members() -> None:
    concatenated = gzip.compress(b'{"a":1}\n{"a":2}\n') + gzipio.compress(b'{"a":3}\n', 1)
    assert list(gzipio.open_reader(io.BytesIO(concatenated))) == [
        b'{"a":1}\n',
        b'{"a":2}\n',
        b'{"a":3}\n',
    ]


def test_a_level_changes_size_not_content(tmp_path: Path) -> None:
    batch = items()
    fast, default = encode_batch(batch, "ndjson.gz", gzip_level=1), encode_batch(batch, "ndjson.gz")
    assert gzip.decompress(fast) == gzip.decompress(default)
    assert len(fast) > len(default)
    deliver = parse_config(config(tmp_path, ", gzip_level: 1")).connectors[0].deliver_config
    sink = make_sink("archive", "file", deliver)
    sink.open()
    written = sink.write(DeliveryBatch("archive", "", batch))
    assert Path(written.name).read_bytes() == fast


@pytest.mark.parametrize("bad", ["0", "10", "fast"])
def test_levels_outside_one_to_nine_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="gzip_level"):
        parse_config(config(tmp_path, f", gzip_level: {bad}"))


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("s3", "bucket: telemetry"),
        ("gcs", "bucket: telemetry"),
        ("azure_blob", "container: telemetry, connection_string: '${env:TEST_AZURE_CONN}'"),
    ],
)
def test_object_stores_take_the_level_too(
    tmp_path: Path, kind: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_AZURE_CONN", "UseDevelopmentStorage=true")
    batch = items()
    cfg = f"""
connectors:
  - id: store
    type: {kind}
    deliver: {{{where}, format: ndjson.gz, gzip_level: 1}}
dead_letter: {{path: {tmp_path / "dlq"}}}
"""
    deliver = parse_config(cfg).connectors[0].deliver_config
    assert deliver.gzip_level == 1
    stored = make_sink("store", kind, deliver).encode(DeliveryBatch("store", "", batch))
    assert stored.data == encode_batch(batch, "ndjson.gz", gzip_level=1)


@pytest.mark.parametrize("level", range(1, 10))
def test_every_level_is_standard_deterministic_gzip(level: int) -> None:
    body = encode_ndjson([i.record for i in items()])
    data = gzipio.compress(body, level)
    assert gzip.decompress(data) == body
    assert data == gzipio.compress(body, level)
    assert data[4:8] == b"\0\0\0\0"  # mtime 0
    # Levels 1-2 go through ISA-L, 3-9 through zlib-ng (bench/RESULTS.md says why).
    engine = igzip if level in gzipio.ISAL_LEVELS else gzip_ng
    assert data == engine.compress(body, compresslevel=level, mtime=0)
