"""The object-store compliance suite: s3, gcs and azure_blob pass the same tests.

Every test is parametrized over the stores it applies to and runs against the real
stand-ins (moto, gcp-storage-emulator, Azurite; see tests/standins/object_stores.py). The
job runs through the real command line (``run`` on the FnApiRunner); objects are read
back with each store's official client and decoded with independent readers (gzip +
json, json, fastavro), never with the connector's own code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.standins.object_stores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    CREATE_ONLY_KINDS,
    STORE_KINDS,
    Store,
    closed_port,
)
from transforms.config import ConfigError, parse_config
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError, WriteResult
from transforms.rules.records import Packaged

pytest_plugins = ["tests.standins.object_stores"]

CID = "archive"
EXTENSIONS = {
    "ndjson": ".ndjson",
    "ndjson.gz": ".ndjson.gz",
    "json_array": ".json",
    "avro": ".avro",
}
CONTENT_TYPES = {
    "ndjson": "application/x-ndjson",
    "ndjson.gz": "application/gzip",
    "json_array": "application/json",
    "avro": "application/avro",
}
EXCLUDED_TYPE = "player_ready"  # the connector's route drops these

every_store = pytest.mark.parametrize("object_store", STORE_KINDS, indirect=True)
create_only_stores = pytest.mark.parametrize("object_store", CREATE_ONLY_KINDS, indirect=True)


# -- inputs, config, running the job ---------------------------------------------------------


def is_event(line: bytes) -> dict[str, Any] | None:
    try:
        e = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(e, dict) and isinstance(e.get("event", {}).get("type"), str):
        return e
    return None


def write_input(
    path: Path, n_events: int, extra: tuple[dict[str, Any], ...] = ()
) -> list[dict[str, Any]]:
    """Generated events (plus invalid lines and ``extra``) in a JSONL file; returns the events."""
    lines = list(generate(n_events, seed=11, invalid=3, iso_every=37))
    lines += [json.dumps(e).encode() for e in extra]
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = [e for e in map(is_event, lines) if e is not None]
    assert len(events) == n_events + len(extra)
    return events


def routed(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the connector must receive, by event id (its route excludes one type)."""
    return {e["event_id"]: e for e in events if e["event"]["type"] != EXCLUDED_TYPE}


def write_config(
    tmp: Path, store: Store, bucket: str, deliver: dict[str, Any] | None = None, **layout: Any
) -> Path:
    section = {**(deliver or store.deliver(bucket)), **layout}
    config = {
        "connectors": [
            {
                "id": CID,
                "type": store.kind,
                "route": {"exclude_events": [EXCLUDED_TYPE]},
                "deliver": section,
            }
        ],
        "dead_letter": {"path": str(tmp / "dead_letter")},
    }
    path = tmp / f"delivery-{bucket}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def run_job(tmp: Path, config: Path, source: Path, *extra: str) -> dict[str, Any]:
    summary = tmp / "summary.json"
    summary.unlink(missing_ok=True)
    argv = ["run", "--config", str(config), "--input", str(source), "--summary-json", str(summary)]
    code = main([*argv, *extra])
    result = json.loads(summary.read_text())
    assert code == 0, result
    assert result["balanced"], result
    return result


def row(summary: dict[str, Any]) -> dict[str, Any]:
    (only,) = [r for r in summary["connectors"] if r["id"] == CID]
    return only


def dead_letters(tmp: Path, stage: str) -> list[dict[str, Any]]:
    folder = tmp / "dead_letter" / stage
    return [
        json.loads(line)
        for f in sorted(folder.rglob("*.ndjson"))
        for line in f.read_text().splitlines()
    ]


# -- independent readers ---------------------------------------------------------------------


def decode(fmt: str, data: bytes) -> list[dict[str, Any]]:
    if fmt == "ndjson":
        text = data.decode("utf-8")
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]
    if fmt == "ndjson.gz":
        assert data[:2] == b"\x1f\x8b", "not a gzip file"
        return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines()]
    if fmt == "json_array":
        records = json.loads(data)
        assert isinstance(records, list)
        return records
    reader = fastavro.reader(io.BytesIO(data))
    fields = {f["name"] for f in reader.writer_schema["fields"]}  # the schema is in the object
    assert {"event_id", "event_type", "event_time_ms", "record"} <= fields
    out = []
    for r in reader:
        record = json.loads(r["record"])
        assert r["event_id"] == record["event_id"]
        assert r["event_type"] == record["event"]["type"]
        out.append(record)
    return out


def event_time(e: dict[str, Any]) -> dt.datetime:
    ts = e["event"]["timestamp"]
    if isinstance(ts, str):
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc)


def expected_prefix(e: dict[str, Any]) -> str:
    return f"{e['event']['type']}/{event_time(e):%Y/%m/%d/%H}/"


def read_objects(store: Store, bucket: str, fmt: str) -> dict[str, list[dict[str, Any]]]:
    return {name: decode(fmt, store.read(bucket, name)) for name in store.names(bucket)}


def name_pattern(fmt: str) -> re.Pattern[str]:
    return re.compile(rf"^(?P<prefix>.*){CID}-[0-9a-f]{{20}}{re.escape(EXTENSIONS[fmt])}$")


# -- the compliance suite ----------------------------------------------------------------------


@every_store
@pytest.mark.parametrize("fmt", list(EXTENSIONS))
def test_every_routed_event_lands_once_in_bounded_objects(
    object_store: Store, fmt: str, tmp_path: Path
) -> None:
    bucket = object_store.new_bucket()
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 1500))
    config = write_config(
        tmp_path,
        object_store,
        bucket,
        prefix="{event_type}/{year}/{month}/{day}/{hour}/",
        format=fmt,
        batch={"max_events": 40},
    )
    summary = run_job(tmp_path, config, source, "--chunk-lines", "400")

    objects = read_objects(object_store, bucket, fmt)
    seen = Counter(r["event_id"] for records in objects.values() for r in records)
    assert set(seen) == set(want), "missing or unexpected events"
    assert [i for i, n in seen.items() if n > 1] == [], "duplicated events"
    pattern = name_pattern(fmt)
    for name, records in objects.items():
        assert 1 <= len(records) <= 40, name
        match = pattern.match(name)
        assert match, name
        for record in records:
            assert record == want[record["event_id"]]  # the whole event round-trips
            assert expected_prefix(record) == match["prefix"], name
        assert object_store.content_type(bucket, name) == CONTENT_TYPES[fmt]
    assert any(len(r) == 40 for r in objects.values())  # batches really were cut
    r = row(summary)
    assert r["routed"] == r["delivered"] == len(want)
    assert r["dead_lettered"] == 0
    assert r["writes"] == len(objects)
    assert summary["input"]["invalid"] + summary["input"]["blank_lines"] == 3


@every_store
def test_rerun_produces_the_same_objects_and_no_duplicates(
    object_store: Store, tmp_path: Path
) -> None:
    bucket = object_store.new_bucket()
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 800))
    config = write_config(tmp_path, object_store, bucket, prefix="{year}/{month}/{day}/{hour}/")
    first = run_job(tmp_path, config, source, "--chunk-lines", "300")
    names = object_store.names(bucket)
    versions = {n: object_store.version(bucket, n) for n in names}

    second = run_job(tmp_path, config, source, "--chunk-lines", "300")
    assert object_store.names(bucket) == names
    assert all(n.endswith(".ndjson.gz") for n in names)  # the default format
    objects = read_objects(object_store, bucket, "ndjson.gz")
    ids = [r["event_id"] for records in objects.values() for r in records]
    assert sorted(ids) == sorted(want)
    for summary in (first, second):
        r = row(summary)
        assert r["routed"] == r["delivered"] == len(want)
        assert r["writes"] == len(names)
    if object_store.kind in CREATE_ONLY_KINDS:
        # Create-only: the rerun found every object there and rewrote none.
        assert {n: object_store.version(bucket, n) for n in names} == versions
        assert row(first)["already_present"] == 0
        assert row(second)["already_present"] == len(want)


@create_only_stores
def test_an_existing_object_is_kept_and_counts_as_delivered(
    object_store: Store, tmp_path: Path
) -> None:
    bucket = object_store.new_bucket()
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 400))
    config = write_config(tmp_path, object_store, bucket, batch={"max_events": 100})
    run_job(tmp_path, config, source)
    names = object_store.names(bucket)
    assert len(names) >= 4
    # Someone else's bytes under the name a batch takes (as after a lost write's answer).
    taken = names[1]
    foreign = b"written by someone else; must survive"
    object_store.overwrite(bucket, taken, foreign)
    versions = {n: object_store.version(bucket, n) for n in names}

    summary = run_job(tmp_path, config, source)

    assert object_store.read(bucket, taken) == foreign
    assert {n: object_store.version(bucket, n) for n in names} == versions
    assert object_store.names(bucket) == names
    r = row(summary)
    assert r["routed"] == r["delivered"] == len(want)
    assert r["already_present"] == len(want)
    assert r["dead_lettered"] == 0


@every_store
def test_missing_bucket_dead_letters_every_event_with_reason_and_status(
    object_store: Store, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = "t-missing-bucket-0001"
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 300))
    config = write_config(tmp_path, object_store, missing, batch={"max_events": 50})

    summary = run_job(tmp_path, config, source)

    r = row(summary)
    assert r["routed"] == r["dead_lettered"] == len(want)
    assert r["delivered"] == 0 and r["writes"] == 0
    assert r["routed"] == r["delivered"] + r["retrying"] + r["dead_lettered"]
    letters = dead_letters(tmp_path, "deliver")
    assert Counter(d["event_id"] for d in letters) == Counter(list(want))  # each exactly once
    for d in letters:
        assert d["connector"] == CID
        assert d["reason"] == "not_retryable"
        assert d["status"] == 404
        assert d["attempts"] == 1  # not retried
        assert missing in d["error"]
        assert d["event"] == want[d["event_id"]]
    output = "".join(capfd.readouterr())
    dumped = "".join(p.read_text() for p in (tmp_path / "dead_letter").rglob("*.ndjson"))
    for secret in object_store.secrets:
        assert secret not in dumped
        assert secret not in output


@every_store
def test_unrenderable_prefix_dead_letters_only_that_event(
    object_store: Store, tmp_path: Path
) -> None:
    bucket = object_store.new_bucket()
    source = tmp_path / "events.jsonl"
    timeless = {
        "event_id": "no-time-1",
        "session_id": "s-no-time",
        "event": {"type": "heartbeat"},
        "metadata": {"device": {"os": "iOS"}},
        "fluxdata": {"num_errors": 0},
    }
    want = routed(write_input(source, 60, extra=(timeless,)))
    config = write_config(tmp_path, object_store, bucket, prefix="{year}/{month}/{day}/{hour}/")

    summary = run_job(tmp_path, config, source)

    objects = read_objects(object_store, bucket, "ndjson.gz")
    delivered = sorted(r["event_id"] for records in objects.values() for r in records)
    assert delivered == sorted(i for i in want if i != "no-time-1")
    (letter,) = dead_letters(tmp_path, "batch")
    assert letter["event_id"] == "no-time-1"
    assert letter["reason"] == "prefix_unrenderable"
    assert letter["connector"] == CID
    assert "event time" in letter["error"]
    r = row(summary)
    assert (r["routed"], r["delivered"], r["dead_lettered"]) == (len(want), len(want) - 1, 1)


# -- the sink contract, called directly against the stand-ins ------------------------------------


def sink_for(tmp: Path, store: Store, deliver: dict[str, Any]) -> Any:
    """The connector's sink built from a validated config (secrets resolved from the env)."""
    config = parse_config(
        json.dumps(
            {
                "connectors": [{"id": CID, "type": store.kind, "deliver": deliver}],
                "dead_letter": {"path": str(tmp / "dl")},
            }
        )
    )
    (connector,) = config.connectors
    sink = make_sink(connector.id, connector.type, connector.deliver_config)
    sink.open()
    return sink


def a_batch(n: int = 25, prefix: str = "direct/") -> DeliveryBatch:
    events = [json.loads(line) for line in generate(n, seed=3)]
    items = [
        Packaged(e["event_id"], e["event"]["timestamp"], e["event"]["type"], e, e) for e in events
    ]
    return DeliveryBatch(CID, prefix, items)


@every_store
def test_sink_writes_once_and_a_second_write_counts_as_delivered(
    object_store: Store, tmp_path: Path
) -> None:
    bucket = object_store.new_bucket()
    sink = sink_for(tmp_path, object_store, object_store.deliver(bucket))
    batch = a_batch()
    try:
        first = sink.write(batch)
        (name,) = object_store.names(bucket)
        version = object_store.version(bucket, name)
        again = sink.write(batch)
    finally:
        sink.close()
    assert isinstance(first, WriteResult) and isinstance(again, WriteResult)
    assert dataclasses.replace(again, existed=False) == first
    assert first.existed is False
    if object_store.kind in CREATE_ONLY_KINDS:
        assert again.existed is True  # found there: delivered, counted as already_present
    assert first.events == 25
    assert first.name.endswith("/" + name)
    assert name.startswith("direct/archive-")
    data = object_store.read(bucket, name)
    assert first.bytes == len(data)
    assert [r["event_id"] for r in decode("ndjson.gz", data)] == [i.event_id for i in batch.items]
    if object_store.kind in CREATE_ONLY_KINDS:
        assert object_store.version(bucket, name) == version


@every_store
def test_sink_classifies_a_missing_bucket_as_not_retryable(
    object_store: Store, tmp_path: Path
) -> None:
    sink = sink_for(tmp_path, object_store, object_store.deliver("t-missing-bucket-0002"))
    try:
        with pytest.raises(DeliveryError) as caught:
            sink.write(a_batch())
    finally:
        sink.close()
    assert caught.value.retryable is False
    assert caught.value.status == 404
    assert "t-missing-bucket-0002" in str(caught.value)
    for secret in object_store.secrets:
        assert secret not in str(caught.value)


@every_store
def test_sink_classifies_an_unreachable_store_as_retryable(
    object_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    for name, value in object_store.env_for(nowhere).items():
        monkeypatch.setenv(name, value)
    sink = sink_for(tmp_path, object_store, object_store.deliver("t-any-bucket", nowhere))
    try:
        with pytest.raises(DeliveryError) as caught:
            sink.write(a_batch())
    finally:
        sink.close()
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert "connection failed" in str(caught.value)
    for secret in object_store.secrets:
        assert secret not in str(caught.value)


# -- store-specific behaviour --------------------------------------------------------------------


@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_s3_endpoint_from_beams_s3_endpoint_url_option(object_store: Store, tmp_path: Path) -> None:
    bucket = object_store.new_bucket()
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 200))
    config = write_config(tmp_path, object_store, bucket, deliver={"bucket": bucket})
    summary = run_job(tmp_path, config, source, "--s3_endpoint_url", object_store.server.url)
    objects = read_objects(object_store, bucket, "ndjson.gz")
    assert sorted(r["event_id"] for rs in objects.values() for r in rs) == sorted(want)
    assert row(summary)["delivered"] == len(want)


@pytest.mark.parametrize("object_store", ["azure_blob"], indirect=True)
@pytest.mark.parametrize("kind", ["account_key", "sas_token"])
def test_azure_account_url_with_key_or_sas_token(
    object_store: Store, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = object_store.new_bucket()
    secret = AZURITE_KEY
    if kind == "sas_token":
        secret = generate_container_sas(
            AZURITE_ACCOUNT,
            container,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(create=True, write=True),
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
        )
    monkeypatch.setenv("TEST_AZURE_CREDENTIAL", secret)
    deliver = {
        "container": container,
        "account_url": f"{object_store.server.url}/{AZURITE_ACCOUNT}",
        "credential": "${env:TEST_AZURE_CREDENTIAL}",
    }
    sink = sink_for(tmp_path, object_store, deliver)
    try:
        result = sink.write(a_batch(10))
        again = sink.write(a_batch(10))  # already there: delivered, with sp=cw
        assert again.existed and dataclasses.replace(again, existed=False) == result
    finally:
        sink.close()
    assert result.name.startswith(f"azfs://{AZURITE_ACCOUNT}/{container}/direct/archive-")
    assert object_store.names(container) == [result.name.split(f"/{container}/", 1)[1]]


@pytest.mark.parametrize("object_store", ["azure_blob"], indirect=True)
def test_azure_wrong_key_is_not_retryable_and_not_printed(
    object_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = object_store.new_bucket()
    wrong_key = "d3Jvbmcta2V5LW5ldmVyLXByaW50ZWQtaW4tYW4tZXJyb3ItbWVzc2FnZQ=="
    monkeypatch.setenv("TEST_AZURE_CREDENTIAL", wrong_key)
    deliver = {
        "container": container,
        "account_url": f"{object_store.server.url}/{AZURITE_ACCOUNT}",
        "credential": "${env:TEST_AZURE_CREDENTIAL}",
    }
    sink = sink_for(tmp_path, object_store, deliver)
    try:
        with pytest.raises(DeliveryError) as caught:
            sink.write(a_batch(5))
    finally:
        sink.close()
    assert caught.value.retryable is False
    assert caught.value.status == 403
    assert wrong_key not in str(caught.value)
    assert object_store.names(container) == []


@pytest.mark.parametrize("object_store", ["gcs"], indirect=True)
def test_gcs_emulator_does_not_enforce_if_generation_match(object_store: Store) -> None:
    """Evidence for the documented limit: why create-only is proven on S3 and Azure only.

    If this fails, the emulator now enforces ``ifGenerationMatch``: add "gcs" to
    CREATE_ONLY_KINDS and update docs/object-stores.md and transforms/connectors/gcs.py.
    """
    bucket = object_store.new_bucket()
    blob = object_store.client.bucket(bucket).blob("twice")
    blob.upload_from_string(b"first", if_generation_match=0)
    blob.upload_from_string(b"second", if_generation_match=0)  # real GCS answers 412 here
    assert object_store.read(bucket, "twice") == b"second"


# -- config validation ---------------------------------------------------------------------------


def problems(deliver: dict[str, Any], ctype: str) -> str:
    text = json.dumps(
        {
            "connectors": [{"id": "c", "type": ctype, "deliver": deliver}],
            "dead_letter": {"path": "/tmp/dl"},
        }
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


def test_azure_needs_exactly_one_way_to_connect() -> None:
    both = problems(
        {"container": "c-1", "connection_string": "x", "account_url": "https://a.blob.x"},
        "azure_blob",
    )
    assert "exactly one of connection_string or account_url" in both and "both are set" in both
    neither = problems({"container": "c-1"}, "azure_blob")
    assert "exactly one of connection_string or account_url" in neither
    assert "neither is set" in neither
    no_credential = problems(
        {"container": "c-1", "account_url": "https://a.blob.core.windows.net"}, "azure_blob"
    )
    assert "account_url needs credential" in no_credential
    sas_in_url = problems(
        {"container": "c-1", "account_url": "https://a.blob.core.windows.net/?sv=1&sig=SECRET"},
        "azure_blob",
    )
    assert "must not carry a query string" in sas_in_url
    assert "sig=SECRET" not in sas_in_url


def test_azure_connection_string_never_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_AZ_CS", "AccountName=a;AccountKey=TOPSECRETKEY==")
    config = parse_config(
        json.dumps(
            {
                "connectors": [
                    {
                        "id": "c",
                        "type": "azure_blob",
                        "deliver": {
                            "container": "telemetry",
                            "connection_string": "${env:TEST_AZ_CS}",
                        },
                    }
                ],
                "dead_letter": {"path": "/tmp/dl"},
            }
        )
    )
    deliver = config.connectors[0].deliver_config
    assert "TOPSECRETKEY" not in repr(deliver) and "TOPSECRETKEY" not in str(deliver)
    assert deliver.connection_string.get_secret_value().endswith("TOPSECRETKEY==")


@pytest.mark.parametrize(
    ("ctype", "deliver", "message"),
    [
        ("s3", {"bucket": "s3://telemetry/raw"}, "must be a bare name"),
        ("s3", {"bucket": "Telemetry"}, "is not a valid name"),
        ("s3", {"bucket": "t", "endpoint_url": "127.0.0.1:9000"}, "must start with http"),
        ("s3", {"bucket": "telemetry", "endpoint": "http://x"}, "did you mean 'endpoint_url'"),
        ("gcs", {"bucket": "gs://telemetry"}, "must be a bare name"),
        ("gcs", {"bucket": "telemetry", "format": "xml"}, "format"),
        ("azure_blob", {"container": "Tele_metry", "connection_string": "x"}, "not a valid name"),
    ],
)
def test_bad_deliver_sections_are_refused_with_the_reason(
    ctype: str, deliver: dict[str, Any], message: str
) -> None:
    assert message in problems(deliver, ctype)


@pytest.mark.parametrize("ctype", STORE_KINDS)
def test_default_format_is_gzipped_ndjson(ctype: str) -> None:
    deliver = {"bucket": "telemetry"} if ctype != "azure_blob" else None
    if deliver is None:
        deliver = {"container": "telemetry", "connection_string": "UseDevelopmentStorage=true"}
    config = parse_config(
        json.dumps(
            {
                "connectors": [{"id": "c", "type": ctype, "deliver": deliver}],
                "dead_letter": {"path": "/tmp/dl"},
            }
        )
    )
    section = config.connectors[0].deliver_config
    assert section.format == "ndjson.gz"
    assert (section.batch.max_events, section.batch.max_wait_s) == (1000, 30.0)


@pytest.mark.parametrize(
    "message",
    [
        "GET http://127.0.0.1:1/acct/c/x?sv=2024-01-01&sp=cw&sig=SIGVALUE%3D failed",
        "bad AccountKey=SIGVALUE==;BlobEndpoint=http://h",
        "https://storage.googleapis.com/b/o?X-Goog-Signature=SIGVALUE&x=1",
        "the key is SIGVALUE, a configured secret",
    ],
)
def test_error_messages_are_redacted(message: str) -> None:
    from transforms.connectors._object_store import redact

    cleaned = redact(message, secrets=("SIGVALUE",))
    assert "SIGVALUE" not in cleaned
    assert "SIGVALUE" not in redact(message.replace("the key is SIGVALUE", "x"))


@pytest.mark.parametrize("object_store", ["azure_blob"], indirect=True)
def test_a_client_that_cannot_be_created_dead_letters_its_events_only(
    object_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_AZURE_CONNECTION_STRING", "garbage-SECRETVALUE-garbage")
    source = tmp_path / "events.jsonl"
    want = routed(write_input(source, 200))
    config = tmp_path / "two.yaml"
    config.write_text(
        json.dumps(
            {
                "connectors": [
                    {
                        "id": CID,
                        "type": "azure_blob",
                        "route": {"exclude_events": [EXCLUDED_TYPE]},
                        "deliver": object_store.deliver("t-never-reached"),
                    },
                    {"id": "local", "type": "file", "deliver": {"path": str(tmp_path / "out")}},
                ],
                "dead_letter": {"path": str(tmp_path / "dead_letter")},
            }
        )
    )
    summary = run_job(tmp_path, config, source)
    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["local"]["delivered"] == 200  # the healthy connector is not held up
    assert rows[CID]["dead_lettered"] == rows[CID]["routed"] == len(want)
    letters = dead_letters(tmp_path, "deliver")
    assert Counter(d["event_id"] for d in letters) == Counter(list(want))
    assert all("malformed" in d["error"] and d["reason"] == "not_retryable" for d in letters)
    assert not any("SECRETVALUE" in json.dumps(d) for d in letters)
