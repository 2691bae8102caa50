from __future__ import annotations

import gzip
import hashlib
import io
import json
from typing import Any

import fastavro
import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_event
from transforms.rules.encode import FORMATS, SCHEMA_FORMATS, dumps, encode_batch
from transforms.rules.events import event_time_ms
from transforms.rules.naming import PrefixError, PrefixTemplate, batch_digest, object_name
from transforms.rules.records import Packaged


def packaged(n: int) -> list[Packaged]:
    out = []
    for i in range(n):
        e = make_event(event_id=f"e{i}", ts=1764136800000 + i)
        out.append(Packaged(e["event_id"], event_time_ms(e), "heartbeat", {**e, "i": i}, e))
    return out


def decode(data: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt.endswith(".gz"):
        return decode(gzip.decompress(data), fmt.removesuffix(".gz"))
    if fmt.endswith(".zst"):
        return decode(zstandard.ZstdDecompressor().decompress(data), fmt.removesuffix(".zst"))
    if fmt == "ndjson":
        return [json.loads(line) for line in data.decode("utf-8").split("\n") if line]
    if fmt == "json_array":
        return json.loads(data)
    rows = list(fastavro.reader(io.BytesIO(data)))
    return [json.loads(r["record"]) for r in rows]


# The columnar formats (csv, parquet) hold columns, not JSON records: tests/test_formats.py.
# Avro takes a schema too, but without one it writes the envelope tested here.
COLUMNAR = set(SCHEMA_FORMATS) - {"avro"}


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - COLUMNAR))
def test_formats_round_trip_with_independent_readers(fmt: str) -> None:
    items = packaged(5)
    data = encode_batch(items, fmt)
    assert decode(data, fmt) == [i.record for i in items]
    assert encode_batch(items, fmt) == data, "encoding is deterministic"


def test_every_text_format_round_trips_in_every_compression() -> None:
    # The determinism test above covers them all: the list it runs over must hold them.
    compressed = {
        f"{base}{suffix}" for base in ("ndjson", "json_array") for suffix in (".gz", ".zst")
    }
    assert compressed <= set(FORMATS) - COLUMNAR
    assert FORMATS["json_array.gz"] == ".json.gz" and FORMATS["json_array.zst"] == ".json.zst"


def test_avro_has_typed_envelope_fields() -> None:
    rows = list(fastavro.reader(io.BytesIO(encode_batch(packaged(2), "avro"))))
    assert rows[0]["event_id"] == "e0" and rows[0]["event_type"] == "heartbeat"
    assert rows[1]["event_time_ms"] == 1764136800001


def test_line_separators_are_escaped_and_round_trip() -> None:
    record = {"t": "a\u2028b\u2029c", "k": "ключ ⚽"}
    data = dumps(record)
    assert b"\xe2\x80\xa8" not in data and b"\\u2028" in data
    assert json.loads(data) == record
    lines = encode_batch([record, record], "ndjson").decode("utf-8").splitlines()
    assert len(lines) == 2  # str.splitlines would split on a raw U+2028


def test_prefix_rendering() -> None:
    p = PrefixTemplate.compile("raw/{connector}/{event_type}/{year}/{month}/{day}/{hour}/{minute}/")
    assert p.render("c", "heartbeat", 1764136800123) == "raw/c/heartbeat/2025/11/26/06/00/"
    with pytest.raises(PrefixError, match="event time"):
        p.render("c", "heartbeat", None)
    assert PrefixTemplate.compile("{connector}/").render("c", "x", None) == "c/"
    assert PrefixTemplate.compile("static/").is_constant


@pytest.mark.parametrize("bad", ["{yr}/", "{year", "{0}"])
def test_bad_prefixes(bad: str) -> None:
    with pytest.raises(ValueError):
        PrefixTemplate.compile(bad)


def test_object_names_derive_from_content() -> None:
    a = object_name("p/", "c", ["e1", "e2"], ".ndjson")
    assert a == object_name("p/", "c", ["e1", "e2"], ".ndjson")
    assert a != object_name("p/", "c", ["e2", "e1"], ".ndjson")
    assert a.startswith("p/c-") and a.endswith(".ndjson")
    assert batch_digest(["e1\ne2"]) != batch_digest(["e1", "e2"])


@pytest.mark.parametrize("ids", [[], ["e1"], ["e1", "e2"], ["é", "x" * 300, ""]])
def test_batch_digest_is_the_stable_length_prefixed_blake2b(ids: list[str]) -> None:
    # Names must not change between versions: a retry record written by an older version
    # retries under the same object name. The definition, written out:
    h = hashlib.blake2b(digest_size=10)
    for event_id in ids:
        data = event_id.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    assert batch_digest(ids) == h.hexdigest()
    assert batch_digest(iter(ids)) == h.hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('a\u2028\u2029\u2014\u2019\u20ac\u2080"\\é'), max_size=12))
def test_dumps_escapes_exactly_the_line_separators(text: str) -> None:
    data = dumps({"t": text})
    plain = orjson.dumps({"t": text})
    want = plain.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    assert data == want and orjson.loads(data) == {"t": text}
