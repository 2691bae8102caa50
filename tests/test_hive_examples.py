"""docs/object-stores.md's Hive-style partition example, run as written against moto S3.

The connector is parsed out of the doc's own YAML block (section "Hive-style partitions by
any field"), so the doc cannot drift from what is tested; only the bucket and the moto
endpoint are filled in. A batch job then writes generated events plus hand-written edge
cases (no country, an empty country, a country holding a slash, no event time) and the
test checks what the doc promises, with expectations computed here from the input events,
never by the job's own rules:

* every object key has the documented layout
  ``events/country=<cc>/dt=<YYYY-MM-DD>/hour=<HH>/lake-<digest>.ndjson.gz``, and every
  record sits under its own country, day and hour (UTC);
* a record without a country goes under ``country=unknown/``; an event without a time is
  a ``prefix_unrenderable`` dead letter; every other event lands exactly once;
* the denied fields (``metadata.user``, ``metadata.network``) are in no record, and the
  doc's ``{field:metadata.user.id|none}`` files every event under ``none/``;
* ``pyarrow.dataset`` with Hive partitioning reads the bucket back with ``country``,
  ``dt`` and ``hour`` as partition columns holding each event's values (a percent-encoded
  segment decodes to the value the event held).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pytest
import yaml

from examples.generate_events import generate
from tests.jobs import run_job
from tests.standins.object_stores import AWS_TEST_SECRET, Store

pytest_plugins = ["tests.standins.object_stores"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "object-stores.md"
SECTION = "## Hive-style partitions by any field"
KEY = re.compile(
    r"^events/country=(?P<country>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"lake-[0-9a-f]{20}\.ndjson\.gz$"
)
ENCODED = {"a/b": "a%2Fb"}
"""Country values that are not one safe segment as they are, as README's "Partitions by
any field" says they are written (any other byte percent-encoded, ``/`` as ``%2F``)."""


def doc_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC.name} lost its section {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def doc_connector() -> dict[str, Any]:
    """The one connector of the section's YAML block, as the doc writes it."""
    blocks = re.findall(r"```yaml\n(.*?)```", doc_section(), re.S)
    assert len(blocks) == 1, f"expected one YAML block in {SECTION!r}, found {len(blocks)}"
    (connector,) = yaml.safe_load(blocks[0])
    return dict(connector)


def doc_user_placeholder() -> str:
    """The placeholder the doc's prose says files every event under ``none/``."""
    found = re.search(
        r"`(\{field:metadata\.user\.id\|none\})` files every event under", doc_section()
    )
    assert found, "the doc no longer shows {field:metadata.user.id|none}"
    return found.group(1)


def event(eid: str, ts: Any, geo: dict[str, Any] | None) -> dict[str, Any]:
    """An event with a user and a network (both denied by the doc's filter)."""
    e: dict[str, Any] = {"event_id": eid, "session_id": "s-edge", "event": {"type": "heartbeat"}}
    if ts is not None:
        e["event"]["timestamp"] = ts
    e["metadata"] = {"user": {"id": "u-secret"}, "network": {"ip": "203.0.113.9"}}
    if geo is not None:
        e["metadata"]["geo"] = geo
    return e


T = 1764136800123  # 2025-11-26T06:00:00.123Z
EDGE = [
    event("no-geo", T, None),
    event("no-country", T + 3_600_000, {"region": "CA"}),  # 07:00
    event("empty-country", T, {"country_code": ""}),
    event("slash-country", "2025-11-26T23:30:00-05:00", {"country_code": "a/b"}),  # 27th, 04h
    event("no-time", None, {"country_code": "US"}),
]


def inputs() -> list[dict[str, Any]]:
    generated = [json.loads(line) for line in generate(240, seed=31)]
    return generated + EDGE


def utc(ts: Any) -> dt.datetime:
    if isinstance(ts, str):
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    return dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc)


def expected_partition(e: dict[str, Any]) -> tuple[str, str, str]:
    """(country as the event holds it, or unknown; UTC day; UTC hour)."""
    country = ((e.get("metadata") or {}).get("geo") or {}).get("country_code") or "unknown"
    when = utc(e["event"]["timestamp"])
    return country, when.strftime("%Y-%m-%d"), when.strftime("%H")


def segment(country: str) -> str:
    if country in ENCODED:
        return ENCODED[country]
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", country), country
    return country


def objects(store: Store, bucket: str) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [json.loads(x) for x in gzip.decompress(store.read(bucket, name)).splitlines()]
        for name in store.names(bucket)
    }


@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_the_docs_hive_example_writes_the_documented_layout_read_by_pyarrow(
    object_store: Store, tmp_path: Path
) -> None:
    lake = doc_connector()
    assert lake["type"] == "s3" and lake["deliver"]["format"] == "ndjson.gz"
    bucket, user_bucket = object_store.new_bucket(), object_store.new_bucket()
    lake["deliver"].update(object_store.deliver(bucket))  # bucket + moto's endpoint only
    user_lake = json.loads(json.dumps(lake))
    user_lake["id"] = "lake_user"
    user_lake["deliver"].update(object_store.deliver(user_bucket))
    user_lake["deliver"]["prefix"] = f"user={doc_user_placeholder()}/"
    config = tmp_path / "delivery.yaml"
    config.write_text(
        yaml.safe_dump(
            {"connectors": [lake, user_lake], "dead_letter": {"path": str(tmp_path / "dl")}}
        )
    )
    events = inputs()
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))

    code, summary = run_job(config, source, tmp_path / "summary.json")

    assert code == 0 and summary["balanced"], summary
    timed = [e for e in events if "timestamp" in e["event"]]
    want = {e["event_id"]: expected_partition(e) for e in timed}
    got = objects(object_store, bucket)
    seen: list[str] = []
    for name, records in got.items():
        found = KEY.match(name)
        assert found, f"{name} does not have the documented layout"
        for record in records:
            country, day, hour = want[record["event_id"]]
            assert (found["country"], found["dt"], found["hour"]) == (segment(country), day, hour)
            assert "user" not in record["metadata"] and "network" not in record["metadata"]
            seen.append(record["event_id"])
    assert sorted(seen) == sorted(want)  # each timed event exactly once
    assert {n.split("/")[1] for n in got} >= {"country=unknown", "country=a%2Fb", "country=US"}

    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["lake"]["delivered"] == len(timed) and rows["lake"]["dead_lettered"] == 1
    letters = [
        json.loads(line)
        for f in (tmp_path / "dl").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    assert {(d["connector"], d["event_id"], d["stage"], d["reason"]) for d in letters} == {
        ("lake", "no-time", "batch", "prefix_unrenderable")
    }

    # The doc's denied-field placeholder: every event (its prefix needs no time) under none/.
    users = objects(object_store, user_bucket)
    assert {n.split("/")[0] for n in users} == {"user=none"}
    assert sorted(r["event_id"] for rs in users.values() for r in rs) == sorted(
        e["event_id"] for e in events
    )

    # Hive readers: the partition columns come back with each event's values.
    s3 = pafs.S3FileSystem(
        access_key=object_store.env["AWS_ACCESS_KEY_ID"],
        secret_key=AWS_TEST_SECRET,
        region="us-east-1",
        endpoint_override=object_store.server.url,
        scheme="http",
    )
    partitions = pa.schema([("country", pa.string()), ("dt", pa.string()), ("hour", pa.string())])
    # A declared table schema, as Athena's or Spark's JSON tables have. (pyarrow's JSON
    # reader refuses a file in which one field changes type, e.g. an event.timestamp that
    # is a number in one line and ISO text in the next, declared or not: so the generated
    # events keep epoch ms, and the one ISO time is alone in its partition.)
    table_schema = pa.schema([("event_id", pa.string())])
    columns = pajson.ParseOptions(explicit_schema=table_schema, unexpected_field_behavior="ignore")
    dataset = ds.dataset(
        f"{bucket}/events",
        filesystem=s3,
        schema=pa.unify_schemas([table_schema, partitions]),
        format=ds.JsonFileFormat(parse_options=columns),
        partitioning=ds.partitioning(partitions, flavor="hive"),
    )
    table = dataset.to_table(columns=["event_id", "country", "dt", "hour"])
    read = sorted((r["event_id"], r["country"], r["dt"], r["hour"]) for r in table.to_pylist())
    assert read == sorted((eid, *p) for eid, p in want.items())
