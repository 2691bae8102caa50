from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.conftest import make_event
from transforms.config import ConfigError, parse_config
from transforms.rules.filter import FieldFilter


def hashed(key: str, **extra: object) -> FieldFilter:
    return FieldFilter.compile(
        {"hash": {"paths": ["metadata.user.id", "metadata.network.ip"], "key": key, **extra}}
    )


def test_hash_is_keyed_deterministic_and_independent_of_the_input_object() -> None:
    e = make_event()
    a1, a2, b = hashed("k1").apply(e), hashed("k1").apply(make_event()), hashed("k2").apply(e)
    expected = hmac.new(b"k1", b"u1", hashlib.sha256).hexdigest()
    assert a1["metadata"]["user"]["id"] == expected == a2["metadata"]["user"]["id"]
    assert b["metadata"]["user"]["id"] != expected
    assert e["metadata"]["user"]["id"] == "u1", "input untouched"
    assert len(hashed("k1", length=16).apply(e)["metadata"]["network"]["ip"]) == 16


def test_non_strings_are_hashed_and_missing_or_null_left_alone() -> None:
    e = make_event(metadata={"user": {"id": 42}, "network": {"ip": None}})
    out = hashed("k").apply(e)
    assert out["metadata"]["user"]["id"] == hmac.new(b"k", b"42", hashlib.sha256).hexdigest()
    assert out["metadata"]["network"]["ip"] is None
    assert hashed("k").apply(make_event(metadata={}))["metadata"] == {}


GOOD = """
connectors:
  - id: c
    type: file
    filter: {{hash: {{paths: [metadata.user.id], key: {key}}}}}
    deliver: {{path: /tmp/x}}
dead_letter: {{path: /tmp/dl}}
"""


def test_key_only_by_reference_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="must be given by reference"):
        parse_config(GOOD.format(key="inline-secret"))
    monkeypatch.setenv("HASH_KEY_FOR_TEST", "s3cret-value")
    config = parse_config(GOOD.format(key="'${env:HASH_KEY_FOR_TEST}'"))
    assert "s3cret-value" not in repr(config) and "s3cret-value" not in str(config.model_dump())
    monkeypatch.delenv("HASH_KEY_FOR_TEST")
    with pytest.raises(ConfigError, match="HASH_KEY_FOR_TEST is not set"):
        parse_config(GOOD.format(key="'${env:HASH_KEY_FOR_TEST}'"))


def test_raw_identifiers_never_reach_a_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_HASH_KEY", "team-key")
    lines = list(generate(500, seed=5))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    raw_ids = {json.loads(x)["metadata"]["user"]["id"] for x in lines}
    raw_ips = {json.loads(x)["metadata"]["network"]["ip"] for x in lines}
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text(
        f"""
connectors:
  - id: analytics
    type: file
    filter:
      metadata: {{deny: [network.isp]}}
      hash:
        paths: [metadata.user.id, metadata.network.ip]
        key: '${{env:TEAM_HASH_KEY}}'
        length: 32
    deliver: {{path: "{tmp_path}/out", format: ndjson}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""
    )
    assert main(["run", "--config", str(cfg), "--input", str(source)]) == 0
    data = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.ndjson"))
    records = [json.loads(x) for x in data.splitlines()]
    assert len(records) == 500
    for raw in raw_ids | raw_ips:
        assert raw.encode() not in data
    assert b"team-key" not in data
    users = {r["metadata"]["user"]["id"] for r in records}
    assert len(users) == len(raw_ids), "distinct users still countable"
    assert all(len(u) == 32 for u in users)
