"""Package serializes records once, while they are hot; every encoder uses those bytes.

``Packaged.data`` is the record as ``encode.dumps`` gives it, made by the Package stage
for connectors that send records as JSON (``ConnectorSpec.sends_record_json``), never for
those that build another shape per record (Splunk HEC, New Relic).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_event
from transforms.config import parse_config
from transforms.live import LiveRules
from transforms.package import _PackageChunk
from transforms.rules.encode import dumps, encode_batch
from transforms.rules.records import Chunk, Packaged, RetryRecord, record_of


def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cid: str) -> Packaged:
    monkeypatch.setenv("TEST_HEC_TOKEN", "t0ken")
    config = parse_config(
        f"""
connectors:
  - id: files
    type: file
    package: {{rename: {{session_id: sid}}}}
    deliver: {{path: "{tmp_path}/out"}}
  - id: hec
    type: splunk_hec
    package: {{template: splunk_hec}}
    deliver: {{endpoint: "http://127.0.0.1:9", token: "${{env:TEST_HEC_TOKEN}}"}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""
    )
    fn = _PackageChunk(LiveRules(config))
    event = make_event("e1", "heartbeat", metadata={"content": {"title": "a\u2028b"}})
    (out,) = fn.process((cid, Chunk([(event, event)])))
    got_cid, (item,) = out
    assert got_cid == cid
    return item


def test_records_sent_as_json_are_serialized_by_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = package(tmp_path, monkeypatch, "files")
    assert item.record is None  # only the bytes are kept; the dict was freed
    assert item.data is not None and b"\\u2028" in item.data  # every encoder's escaping
    record = record_of(item)
    assert "sid" in record and "session_id" not in record
    assert dumps(record) == item.data


def test_a_record_kept_as_bytes_reads_back_the_same() -> None:
    record = {"a": "x\u2028y", "n": 1.5, "big": 2**62, "list": [1, {"b": None}], "t": True}
    kept = Packaged("e", None, "heartbeat", None, {}, dumps(record))
    assert record_of(kept) == record
    with pytest.raises(ValueError, match="neither record nor data"):
        record_of(Packaged("e", None, "heartbeat", None, {}))


def test_records_of_other_shapes_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    item = package(tmp_path, monkeypatch, "hec")
    assert item.data is None
    assert item.record is not None and item.record["event_id"] == "e1"


def item(n: int, data: bytes | None) -> Packaged:
    return Packaged(f"e{n}", 1764136800123, "heartbeat", {"n": n}, {"event_id": f"e{n}"}, data)


@pytest.mark.parametrize("fmt", ["ndjson", "json_array", "ndjson.gz", "avro"])
def test_encoders_use_the_serialized_bytes(fmt: str) -> None:
    # Bytes that differ from the record on purpose: the encoder must not serialize again.
    fresh = [item(n, None) for n in range(3)]
    made = [item(n, dumps({"n": n, "made": True})) for n in range(3)]
    assert encode_batch(fresh, fmt) != encode_batch(made, fmt)
    assert encode_batch(made, fmt) == encode_batch(
        [item(n, None)._replace(record={"n": n, "made": True}) for n in range(3)], fmt
    )


def test_retry_records_store_the_record_once() -> None:
    record = RetryRecord("files", "", [item(1, dumps({"n": 1}))], "r", 1, 0, "t", "e", None, 0)
    stored = record.to_json_dict()
    assert stored["items"][0]["data"] is None
    assert stored["items"][0]["record"] == {"n": 1}
    only_bytes = RetryRecord(
        "files", "", [item(1, dumps({"n": 1}))._replace(record=None)], "r", 1, 0, "t", "e", None, 0
    )
    assert only_bytes.to_json_dict() == stored
    back = RetryRecord.from_json_dict(stored)
    assert back.items[0].data is None
    assert encode_batch(back.items, "ndjson") == encode_batch(record.items, "ndjson")
