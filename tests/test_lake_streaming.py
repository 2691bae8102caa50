"""Issue 23's "done means" in streaming: the warehouse and lake connectors on the default
engine (Prism), reading Google's Pub/Sub emulator.

One streaming job (the README's ``run --streaming --subscription S``, the harness of
tests/test_streaming_default_engine.py) with five connectors:

* ``warehouse``: ``type: bigquery`` (``streaming_inserts``) to the strict ``insertAll``
  receiver (tests/receivers/bigquery.py), a template without casts, so a bitrate no INT64
  takes is refused by "BigQuery" row by row (a ``not_retryable`` dead letter with its
  reason) while the other rows land;
* ``warehouse_sw``: ``type: bigquery`` with ``method: storage_write`` (gRPC AppendRows at
  offsets on a committed stream) to the strict in-process ``BigQueryWrite`` stand-in, its
  own table, ``schema: auto`` (the columns the stand-in's ``CreateWriteStream`` reports,
  ``country`` ``REQUIRED``): a bitrate of "fast" cannot be encoded for the INT64 column
  (refused before sending, in BigQuery's words), and the event without a geo object is
  refused by the stand-in itself (``row_errors``: "Missing required field: country.");
  both are ``not_retryable`` dead letters, the other rows are stored once each, although
  the stand-in loses the answers of the first appends (:data:`LOST_ANSWERS`);
* ``lake_parquet``: Parquet with a declared schema to moto S3, Hive-partitioned by
  ``country={field:metadata.geo.country_code|unknown}/dt={year}-{month}-{day}/``; a bitrate
  the schema's INT64 refuses is a ``format_refused`` dead letter, an event without a time
  a ``prefix_unrenderable`` one;
* ``flat_csv``: ``csv.zst`` to the GCS emulator (no schema: every event lands);
* ``typed_avro``: typed Avro (``schema: auto`` from a template with casts) to Azurite; a
  bitrate ``cast: int`` refuses is a ``package_cast_failed`` dead letter.

Every expected row, record and dead letter is computed below from the input events by a
few lines of plain Python (never the job's compiled rules), and read back with the
receiver's stored rows, pyarrow, the ``csv`` module + zstandard, and fastavro, through the
stores' official clients. Each event lands exactly once per connector or is exactly one
dead letter with its reason, and the summary balances. tests/test_lake_flink.py runs the
same job on Flink (batch and streaming) and imports what it needs from here.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import grpc
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.generate_events import generate
from tests.receivers.base import Receiver
from tests.receivers.bigquery import BigQueryInsertAllApi, BigQueryWriteStandIn
from tests.standins.object_stores import Server, Store, make_store
from tests.standins.pubsub import PubSubEmulator
from tests.test_connector_contract import open_sink
from tests.test_streaming_default_engine import _start_job
from transforms.connectors.base import DeliveryBatch, DeliveryError, PartialDeliveryError
from transforms.rules.records import Packaged

pytest_plugins = ["tests.standins.pubsub", "tests.standins.object_stores"]

TABLE = "my-project.telemetry.player_events"
TABLE_COLUMNS = [
    ("event_id", "STRING", "REQUIRED"),
    ("event_type", "STRING", "NULLABLE"),
    ("country", "STRING", "NULLABLE"),
    ("bitrate_kbps", "INT64", "NULLABLE"),
]
SW_TABLE = "my-project.telemetry.player_events_sw"
SW_COLUMNS = [
    ("event_id", "STRING", "REQUIRED"),
    ("event_type", "STRING", "NULLABLE"),
    ("country", "STRING", "REQUIRED"),
    ("bitrate_kbps", "INT64", "NULLABLE"),
    ("event_time", "TIMESTAMP", "NULLABLE"),
]
LOST_ANSWERS = 3
"""The write stand-in commits the first appends this many times and loses the answer
(UNAVAILABLE after appending, as after a network failure): the connector must find out
which of its appends landed, also when other batches reach the same stream in between."""
N_GENERATED = 120
T = 1764136800123  # 2025-11-26T06:00:00.123Z
PARQUET_KEY = re.compile(
    r"^country=(?P<country>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/lake_parquet-[0-9a-f]{20}\.parquet$"
)
CONNECTORS = ("warehouse", "warehouse_sw", "lake_parquet", "flat_csv", "typed_avro")

# -- the input ----------------------------------------------------------------------------------


def lake_events() -> list[dict[str, Any]]:
    """Generated events (every 11th with an ISO time), every 13th with a bitrate of "fast",
    one without a geo object, and a hand-written one without a time."""
    events = [json.loads(x) for x in generate(N_GENERATED, seed=23, iso_every=11)]
    for i, e in enumerate(events):
        if i % 13 == 5:
            e["fluxdata"]["rendition_video_bitrate_kbps"] = "fast"
    del events[7]["metadata"]["geo"]
    events.append(
        {
            "event_id": "no-time",
            "event": {"type": "heartbeat"},
            "metadata": {"geo": {"country_code": "US"}},
            "fluxdata": {"rendition_video_bitrate_kbps": 800, "playhead_position_sec": 1.5},
        }
    )
    return events


def lake_lines() -> list[bytes]:
    return [json.dumps(e).encode() for e in lake_events()]


# -- the job's config ---------------------------------------------------------------------------


@dataclass
class Lake:
    """Where the five connectors deliver: the two BigQuery stand-ins and one bucket per
    store."""

    bq: BigQueryInsertAllApi
    receiver: Receiver
    bq_write: BigQueryWriteStandIn
    stores: dict[str, Store]  # by connector type: s3, gcs, azure_blob
    buckets: dict[str, str]  # by connector type


def lake_connectors(lake: Lake) -> list[dict[str, Any]]:
    """The five connectors (YAML data) writing into ``lake``."""
    s3, gcs, azure = (lake.stores[k] for k in ("s3", "gcs", "azure_blob"))
    plain = {
        "event_id": "event_id",
        "event_type": "event.type",
        "country": "metadata.geo.country_code",
        "bitrate_kbps": "fluxdata.rendition_video_bitrate_kbps",
    }
    return [
        {
            "id": "warehouse",
            "type": "bigquery",
            "package": {"template": {"fields": plain}},
            "deliver": {
                "table": TABLE,
                "endpoint": lake.receiver.url,
                "method": "streaming_inserts",
                "batch": {"max_events": 40, "max_wait_s": 1},
            },
        },
        {
            "id": "warehouse_sw",
            "type": "bigquery",
            "package": {
                "template": {
                    "fields": {
                        **plain,
                        "event_time": {"path": "event.timestamp", "format": "iso8601"},
                    }
                }
            },
            "deliver": {
                "table": SW_TABLE,
                "endpoint": lake.bq_write.url,
                "method": "storage_write",
                "schema": "auto",
                "batch": {"max_events": 40, "max_wait_s": 1},
            },
        },
        {
            "id": "lake_parquet",
            "type": "s3",
            "package": {
                "template": {
                    "fields": {
                        "event_id": "event_id",
                        "event_type": "event.type",
                        "event_time": {"path": "event.timestamp", "format": "iso8601"},
                        "metadata.geo.country_code": "metadata.geo.country_code",
                        "bitrate_kbps": "fluxdata.rendition_video_bitrate_kbps",
                    }
                }
            },
            "deliver": {
                **s3.deliver(lake.buckets["s3"]),
                "prefix": "country={field:metadata.geo.country_code|unknown}/"
                "dt={year}-{month}-{day}/",
                "format": "parquet",
                "parquet_row_group_mb": 0.0002,  # ~210 bytes: a few rows per row group
                "batch": {"max_events": 40, "max_wait_s": 1},
                "schema": [
                    {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
                    {"name": "event_type", "type": "STRING"},
                    {"name": "event_time", "type": "TIMESTAMP"},
                    {
                        "name": "metadata",
                        "type": "RECORD",
                        "fields": [
                            {
                                "name": "geo",
                                "type": "RECORD",
                                "fields": [{"name": "country_code", "type": "STRING"}],
                            }
                        ],
                    },
                    {"name": "bitrate_kbps", "type": "INT64"},
                ],
            },
        },
        {
            "id": "flat_csv",
            "type": "gcs",
            "package": {"template": {"fields": plain}},
            "deliver": {
                **gcs.deliver(lake.buckets["gcs"]),
                "format": "csv.zst",
                "batch": {"max_events": 40, "max_wait_s": 1},
            },
        },
        {
            "id": "typed_avro",
            "type": "azure_blob",
            "package": {
                "template": {
                    "fields": {
                        "event_id": "event_id",
                        "event_type": "event.type",
                        "event_time": {"path": "event.timestamp", "format": "iso8601"},
                        "bitrate_kbps": {
                            "path": "fluxdata.rendition_video_bitrate_kbps",
                            "cast": "int",
                        },
                        "playhead_sec": {"path": "fluxdata.playhead_position_sec", "cast": "float"},
                    }
                }
            },
            "deliver": {
                **azure.deliver(lake.buckets["azure_blob"]),
                "format": "avro",
                "schema": "auto",
                "batch": {"max_events": 40, "max_wait_s": 1},
            },
        },
    ]


def connectors_yaml(lake: Lake) -> str:
    """The connectors as the items of a ``connectors:`` list (for ``_start_job``)."""
    items = yaml.safe_dump(lake_connectors(lake), sort_keys=False)
    return "\n".join("  " + line for line in items.splitlines())


# -- what must come out, computed from the input events ------------------------------------------


def _utc(ts: Any) -> dt.datetime:
    if isinstance(ts, str):
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ts)


def _micros(when: dt.datetime) -> int:
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _country(e: dict[str, Any]) -> str | None:
    geo = e["metadata"].get("geo")
    return None if geo is None else geo.get("country_code")


def _bitrate(e: dict[str, Any]) -> Any:
    return e["fluxdata"]["rendition_video_bitrate_kbps"]


def _is_bad(e: dict[str, Any]) -> bool:
    return not isinstance(_bitrate(e), int)


@dataclass
class Expected:
    """Per connector: the records (canonical JSON, a multiset) and the dead letters
    ``(connector, event_id, stage, reason)``; ``said``: by ``(connector, event_id)``, words
    a dead letter's ``error`` must contain, e.g. ``("warehouse_sw", "e7")`` ->
    ``"Missing required field: country."`` (the stand-in's own ``row_errors`` message)."""

    records: dict[str, Counter[str]]
    letters: Counter[tuple[str, str, str, str]]
    said: dict[tuple[str, str], str]


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def expected(events: list[dict[str, Any]]) -> Expected:
    records: dict[str, Counter[str]] = {cid: Counter() for cid in CONNECTORS}
    letters: Counter[tuple[str, str, str, str]] = Counter()
    said: dict[tuple[str, str], str] = {}
    for e in events:
        eid, etype, country = e["event_id"], e["event"]["type"], _country(e)
        ts = e["event"].get("timestamp")
        when = None if ts is None else _utc(ts)
        bad = _is_bad(e)
        # BigQuery: a missing value is a missing key; "fast" is refused by the table.
        row = {"event_id": eid, "event_type": etype, "bitrate_kbps": _bitrate(e)}
        if country is not None:
            row["country"] = country
        if bad:
            letters[("warehouse", eid, "deliver", "not_retryable")] += 1
        else:
            records["warehouse"][canonical(row)] += 1
        # Storage Write: "fast" cannot be encoded for INT64 (refused before sending); a row
        # without the REQUIRED country is refused by the stand-in (row_errors). A stored
        # row reads back in protobuf's JSON mapping: INT64 and TIMESTAMP (microseconds
        # since the epoch) as decimal text, an unset column absent.
        if bad:
            letters[("warehouse_sw", eid, "deliver", "not_retryable")] += 1
            said[("warehouse_sw", eid)] = (
                'invalid at bitrate_kbps: Cannot convert value to integer (bad value): "fast"'
            )
        elif country is None:
            letters[("warehouse_sw", eid, "deliver", "not_retryable")] += 1
            said[("warehouse_sw", eid)] = "bigquery row: Missing required field: country."
        else:
            stored = {
                "event_id": eid,
                "event_type": etype,
                "country": country,
                "bitrate_kbps": str(_bitrate(e)),
            }
            if when is not None:
                stored["event_time"] = str(_micros(when))
            records["warehouse_sw"][canonical(stored)] += 1
        # Parquet: read back with the Hive partition it was filed under.
        if when is None:
            letters[("lake_parquet", eid, "batch", "prefix_unrenderable")] += 1
        elif bad:
            letters[("lake_parquet", eid, "deliver", "format_refused")] += 1
        else:
            parquet = {
                "event_id": eid,
                "event_type": etype,
                "event_time": when,
                "metadata": None if country is None else {"geo": {"country_code": country}},
                "bitrate_kbps": _bitrate(e),
                "partition": (country or "unknown", when.strftime("%Y-%m-%d")),
            }
            records["lake_parquet"][canonical(parquet)] += 1
        # CSV: every cell is text; a missing value an empty cell.
        cells = {
            "event_id": eid,
            "event_type": etype,
            "country": country or "",
            "bitrate_kbps": str(_bitrate(e)),
        }
        records["flat_csv"][canonical(cells)] += 1
        # Typed Avro: cast: int refuses "fast"; a missing time is null.
        if bad:
            letters[("typed_avro", eid, "package", "package_cast_failed")] += 1
        else:
            avro = {
                "event_id": eid,
                "event_type": etype,
                "event_time": when,
                "bitrate_kbps": _bitrate(e),
                "playhead_sec": float(e["fluxdata"]["playhead_position_sec"]),
            }
            records["typed_avro"][canonical(avro)] += 1
    return Expected(records, letters, said)


# -- what came out, read back from the destinations --------------------------------------------


def _parquet_records(store: Store, bucket: str) -> Counter[str]:
    got: Counter[str] = Counter()
    for name in store.names(bucket):
        found = PARQUET_KEY.match(name)
        assert found, f"{name}: not the Hive layout country=<cc>/dt=<day>/"
        for row in pq.read_table(io.BytesIO(store.read(bucket, name))).to_pylist():
            row["partition"] = (found["country"], found["dt"])
            got[canonical(row)] += 1
    return got


def _row_groups(store: Store, bucket: str) -> list[int]:
    """How many row groups each Parquet object holds."""
    return [
        pq.ParquetFile(io.BytesIO(store.read(bucket, name))).num_row_groups
        for name in store.names(bucket)
    ]


def _csv_records(store: Store, bucket: str) -> Counter[str]:
    got: Counter[str] = Counter()
    for name in store.names(bucket):
        assert name.startswith("flat_csv-") and name.endswith(".csv.zst"), name
        text = zstandard.ZstdDecompressor().decompress(store.read(bucket, name)).decode()
        for row in csv.DictReader(io.StringIO(text, newline="")):
            cells = {k: row.get(k) or "" for k in ("event_id", "event_type", "country")}
            cells["bitrate_kbps"] = row.get("bitrate_kbps") or ""
            got[canonical(cells)] += 1
    return got


def _avro_records(store: Store, bucket: str) -> Counter[str]:
    got: Counter[str] = Counter()
    for name in store.names(bucket):
        assert name.startswith("typed_avro-") and name.endswith(".avro"), name
        reader = fastavro.reader(io.BytesIO(store.read(bucket, name)))
        schema: Any = reader.writer_schema
        types = {f["name"]: f["type"] for f in schema["fields"]}
        assert "long" in json.dumps(types["bitrate_kbps"]), types  # typed, not an envelope
        assert "timestamp-millis" in json.dumps(types["event_time"]), types
        for row in reader:
            got[canonical(dict(row))] += 1  # type: ignore[arg-type]
    return got


def outputs(lake: Lake) -> dict[str, Counter[str]]:
    """Every connector's delivered records, read back from its destination."""
    return {
        "warehouse": Counter(canonical(r) for r in lake.bq.rows[TABLE]),
        "warehouse_sw": Counter(canonical(r) for r in list(lake.bq_write.rows[SW_TABLE])),
        "lake_parquet": _parquet_records(lake.stores["s3"], lake.buckets["s3"]),
        "flat_csv": _csv_records(lake.stores["gcs"], lake.buckets["gcs"]),
        "typed_avro": _avro_records(lake.stores["azure_blob"], lake.buckets["azure_blob"]),
    }


def dead_letters(
    folder: Path, said: dict[tuple[str, str], str] | None = None
) -> Counter[tuple[str, str, str, str]]:
    """The dead letters under ``folder`` by ``(connector, event_id, stage, reason)``; with
    ``said`` (:attr:`Expected.said`), each one's error must say what it expects."""
    letters: Counter[tuple[str, str, str, str]] = Counter()
    for path in folder.rglob("*.ndjson"):
        for line in path.read_text().splitlines():
            d = json.loads(line)
            letters[(d["connector"], d["event_id"], d["stage"], d["reason"])] += 1
            if d["connector"] == "warehouse":  # BigQuery's own reason, row by row
                assert "Cannot convert value to integer" in d["error"], d
            if d["reason"] == "format_refused":
                assert "'bitrate_kbps'" in d["error"] and "fast" in d["error"], d
            if said is not None and (d["connector"], d["event_id"]) in said:
                assert said[(d["connector"], d["event_id"])] in d["error"], d
    return letters


def check_outputs(lake: Lake, out: Path, want: Expected) -> None:
    """Every connector's records and the dead letters are exactly the expected ones."""
    got = outputs(lake)
    for cid in CONNECTORS:
        assert got[cid] == want.records[cid], cid
    stored = Counter(r["event_id"] for r in lake.bq_write.rows[SW_TABLE])
    assert not [eid for eid, n in stored.items() if n > 1], "warehouse_sw: a row stored twice"
    assert dead_letters(out / "dead_letter", want.said) == want.letters
    groups = _row_groups(lake.stores["s3"], lake.buckets["s3"])
    assert max(groups) > 1, f"parquet_row_group_mb cut no object into row groups: {groups}"


def check_summary(summary: dict[str, Any], want: Expected) -> None:
    assert summary["balanced"], summary
    rows = {r["id"]: r for r in summary["connectors"]}
    for cid in CONNECTORS:
        n_letters = sum(n for key, n in want.letters.items() if key[0] == cid)
        n_records = sum(want.records[cid].values())
        assert rows[cid]["delivered"] == n_records, (cid, rows[cid])
        assert rows[cid]["dead_lettered"] == n_letters, (cid, rows[cid])


def settled(lake: Lake, out: Path, want: Expected) -> Callable[[], bool]:
    """True once every expected record and dead letter is there (read from the stores)."""

    def check() -> bool:
        got = outputs(lake)
        return all(got[c] >= want.records[c] for c in CONNECTORS) and (
            dead_letters(out / "dead_letter") >= want.letters
        )

    return check


def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: Any) -> None:
    """Poll ``condition`` once a second (the stores are read each time) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(1)


# -- fixtures ------------------------------------------------------------------------------------


@contextlib.contextmanager
def lake_in_env(moto: Server, gcs: Server, azurite: Server, folder: Path) -> Iterator[Lake]:
    """A fresh receiver and a fresh bucket in each store; the stores' credentials in this
    process's environment while it lasts (a job's subprocess inherits them), the AWS chain
    isolated from the machine's own files."""
    bq = BigQueryInsertAllApi({TABLE: TABLE_COLUMNS})
    receiver = Receiver(bq)
    bq_write = BigQueryWriteStandIn({SW_TABLE: SW_COLUMNS})
    bq_write.fail(times=LOST_ANSWERS, code=grpc.StatusCode.UNAVAILABLE, commit=True)
    stores = {
        "s3": make_store("s3", moto),
        "gcs": make_store("gcs", gcs),
        "azure_blob": make_store("azure_blob", azurite),
    }
    try:
        with pytest.MonkeyPatch.context() as env:
            missing = str(folder / "no-such-aws-file")
            env.setenv("AWS_CONFIG_FILE", missing)
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
            for name in (
                "AWS_PROFILE",
                "AWS_SESSION_TOKEN",
                "BIGQUERY_EMULATOR_HOST",
                "BIGQUERY_STORAGE_EMULATOR_HOST",
            ):
                env.delenv(name, raising=False)
            for store in stores.values():
                for name, value in store.env.items():
                    env.setenv(name, value)
            buckets = {k: s.new_bucket() for k, s in stores.items()}
            yield Lake(bq, receiver, bq_write, stores, buckets)
    finally:
        receiver.stop()
        bq_write.stop()


@pytest.fixture
def lake(
    moto_server: Server, gcs_emulator: Server, azurite: Server, tmp_path: Path
) -> Iterator[Lake]:
    """The five destinations, fresh for one test (see :func:`lake_in_env`)."""
    with lake_in_env(moto_server, gcs_emulator, azurite, tmp_path) as fresh:
        yield fresh


def publish(pubsub: PubSubEmulator, lines: list[bytes]) -> str:
    """Publish ``lines`` to a new topic; return a subscription made before publishing."""
    from google.cloud import pubsub_v1

    topic = pubsub.create_topic("lake")
    subscription = pubsub.create_subscription(topic)
    publisher = pubsub_v1.PublisherClient()
    for future in [publisher.publish(topic, line) for line in lines]:
        future.result(timeout=30)
    return subscription


# -- the test ------------------------------------------------------------------------------------


def test_warehouse_and_lake_connectors_stream_on_prism_from_pubsub(
    tmp_path: Path, pubsub_env: PubSubEmulator, lake: Lake
) -> None:
    events = lake_events()
    want = expected(events)
    assert want.letters and all(want.records.values())  # every connector has both kinds
    sw_said = [v for (cid, _), v in want.said.items() if cid == "warehouse_sw"]
    assert any("Missing required field" in v for v in sw_said)  # refused by the stand-in
    assert any("Cannot convert value to integer" in v for v in sw_said)  # before sending
    subscription = publish(pubsub_env, lake_lines())
    out = tmp_path / "out"
    proc, log = _start_job(tmp_path, connectors_yaml(lake), "--subscription", subscription)
    try:
        wait_until(settled(lake, out, want), 300, "every expected output", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    printed = (tmp_path / "job.log").read_text()
    check_outputs(lake, out, want)  # after the drain: nothing duplicated, nothing extra
    summary = json.loads((out / "summary.json").read_text())
    if proc.returncode == 0:
        check_summary(summary, want)
        return
    # The outputs are exact (above); only Prism's counters may come out short
    # (docs/beam-limits.md, "Prism can under-report"). A count above the truth fails here.
    assert "MISMATCH" in printed, printed[-3000:]
    rows = {r["id"]: r for r in summary["connectors"]}
    short = {}
    for cid in CONNECTORS:
        n_records = sum(want.records[cid].values())
        assert rows[cid]["delivered"] <= n_records, (cid, rows[cid])
        if rows[cid]["delivered"] < n_records:
            short[cid] = (rows[cid]["delivered"], n_records)
    assert short, summary
    pytest.xfail(f"Prism 2.77 lost counter values (docs/beam-limits.md): {short}")


# -- the Storage Write sink as a streaming lane drives it ---------------------------------------

Step = tuple[int, bool | None]
"""One write in a schedule: which unfinished batch (an index, modulo how many are left),
and whether the stand-in loses that write's answer (True: after appending the rows,
False: before; None: no fault)."""


def _sw_items(batch: int, bad: list[bool]) -> list[Packaged]:
    """Rows of ``SW_TABLE``; a ``bad`` one lacks the REQUIRED country (the stand-in's
    ``row_errors`` refuse it)."""
    items = []
    for i, without_country in enumerate(bad):
        eid = f"b{batch}-{i}"
        record: dict[str, Any] = {"event_id": eid, "event_type": "heartbeat", "bitrate_kbps": i}
        if not without_country:
            record["country"] = "US"
        items.append(Packaged(eid, T + i, "heartbeat", record, {}))
    return items


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(st.booleans(), min_size=1, max_size=4), min_size=2, max_size=4),
    schedule=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([None, True, False])), max_size=10
    ),
)
def test_storage_write_stores_interleaved_batches_once_when_answers_are_lost(
    batches: list[list[bool]], schedule: list[Step]
) -> None:
    """One sink takes batches in any order, as a streaming lane's writer threads hand them
    over (a retry after its backoff may come after other batches), while answers are lost
    before or after the rows were appended. Each row is stored once, each refused row is
    one dead letter, and the sink reports each event delivered exactly once.

    Found by the Prism run: batch A's answer lost (its rows landed), batch B appended past
    it to learn A's fate, B's rows refused in part (``row_errors``) and its rest's answer
    lost too: the sink forgot A and appended A's rows a second time."""
    server = BigQueryWriteStandIn({SW_TABLE: SW_COLUMNS})
    sink = open_sink(
        "bigquery",
        {
            "table": SW_TABLE,
            "method": "storage_write",
            "endpoint": server.url,
            "timeouts": {"connect_s": 2, "read_s": 5},
        },
        cid="warehouse_sw",
    )
    pending = {b: _sw_items(b, bad) for b, bad in enumerate(batches)}
    delivered: Counter[str] = Counter()
    letters: Counter[str] = Counter()

    def write(b: int) -> None:
        items = pending[b]
        try:
            result = sink.write(DeliveryBatch("warehouse_sw", "", items))
        except PartialDeliveryError as exc:
            errors = exc.errors_for(items)
            again = [i for i, e in zip(items, errors, strict=True) if e and e.retryable]
            letters.update(
                i.event_id for i, e in zip(items, errors, strict=True) if e and not e.retryable
            )
            delivered.update(i.event_id for i, e in zip(items, errors, strict=True) if e is None)
            assert exc.delivered.events == sum(e is None for e in errors)
            pending[b] = again
            return
        except DeliveryError as exc:
            assert exc.retryable, exc  # the whole batch again, as the shared policy does
            return
        assert result.events == len(items)
        delivered.update(i.event_id for i in items)
        pending[b] = []

    try:
        for pick, lost in schedule:
            left = sorted(b for b, items in pending.items() if items)
            if not left:
                break
            if lost is not None:
                server.fail(times=1, code=grpc.StatusCode.UNAVAILABLE, commit=lost)
            write(left[pick % len(left)])
        for _ in range(len(schedule) + 3):  # the faults left over are used up here
            for b in sorted(b for b, items in pending.items() if items):
                write(b)
    finally:
        sink.close()
        server.stop()
    assert not any(pending.values()), pending
    stored = Counter(r["event_id"] for r in server.rows[SW_TABLE])
    refused = {f"b{b}-{i}" for b, bad in enumerate(batches) for i, x in enumerate(bad) if x}
    everyone = {f"b{b}-{i}" for b, bad in enumerate(batches) for i in range(len(bad))}
    assert [e for e, n in stored.items() if n > 1] == [], server.appends  # never twice
    assert set(stored) == everyone - refused, server.appends
    assert set(letters) == refused and max(letters.values(), default=1) == 1
    assert delivered == Counter(everyone - refused), server.appends  # once each
