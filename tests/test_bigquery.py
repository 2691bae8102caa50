"""``type: bigquery``: what the compliance suite does not check.

Against the strict ``tabledata.insertAll`` receiver (tests/receivers/bigquery.py): a
wrongly typed row is one dead letter with BigQuery's reason while the others land; a
retried timed-out request does not duplicate rows (``insertId``); a quota 403 and a 503
are retried, other 4xx are not; credentials never reach an error; a table name that is
not ``PROJECT.DATASET.TABLE`` is refused at validate (``method: storage_write``:
tests/test_bigquery_storage_write.py); the schema rules (declared vs template,
``auto``); and a whole run whose counts add up.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts import bqemulator_launcher
from tests.jobs import run_job
from tests.receivers.base import Receiver
from tests.receivers.bigquery import BigQueryInsertAllApi, backend_error, error_body, quota_error
from tests.test_connector_contract import config_text, open_sink
from transforms.config import ConfigError, parse_config
from transforms.connectors import bigquery
from transforms.connectors.base import DeliveryBatch, DeliveryError, PartialDeliveryError
from transforms.rules.records import Packaged
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures

pytest_plugins = ["tests.receivers.fixtures"]

TABLE = "my-project.telemetry.player_events"
COLUMNS = [
    ("event_id", "STRING", "REQUIRED"),
    ("event_type", "STRING", "NULLABLE"),
    ("bitrate_kbps", "INT64", "NULLABLE"),
]
FUSED = RetryPolicy(immediate=3, sleep=lambda _: None)

StartReceiver = Callable[[Any], Receiver]


def rows(bitrates: list[Any], prefix: str = "e") -> list[Packaged]:
    out = []
    for i, bitrate in enumerate(bitrates):
        record = {"event_id": f"{prefix}{i}", "event_type": "heartbeat", "bitrate_kbps": bitrate}
        out.append(Packaged(f"{prefix}{i}", 1764136800123 + i, "heartbeat", record, {}))
    return out


def bq_sink(receiver: Receiver, **deliver: Any) -> Any:
    base = {"table": TABLE, "endpoint": receiver.url, "timeouts": {"connect_s": 2, "read_s": 5}}
    return open_sink("bigquery", {**base, **deliver})


@pytest.fixture
def bq(start_receiver: StartReceiver) -> tuple[Receiver, BigQueryInsertAllApi]:
    api = BigQueryInsertAllApi({TABLE: COLUMNS})
    return start_receiver(api), api


# -- per-row errors ------------------------------------------------------------------------------


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(st.booleans(), min_size=1, max_size=40))
def test_wrongly_typed_rows_are_dead_letters_with_bigquerys_reason_the_others_land(
    bad: list[bool], start_receiver: StartReceiver
) -> None:
    api = BigQueryInsertAllApi({TABLE: COLUMNS})
    receiver = start_receiver(api)
    sink = bq_sink(receiver)
    batch = DeliveryBatch("c1", "", rows(["4500kbps" if b else 4500 for b in bad]))
    try:
        outcome = deliver_with_retries(sink, batch, FUSED)
    finally:
        sink.close()
    wanted_bad = {f"e{i}" for i, b in enumerate(bad) if b}
    assert {r["event_id"] for r in api.rows[TABLE]} == {f"e{i}" for i, b in enumerate(bad)} - (
        wanted_bad
    )
    assert len(api.rows[TABLE]) == len(bad) - len(wanted_bad)  # each good row once
    assert outcome.delivered == len(bad) - len(wanted_bad)
    assert {item.event_id for item, _, _ in outcome.failed} == wanted_bad
    _, letters = settle_failures(batch, outcome, (300.0,), delayed_enabled=True)
    assert len(letters) == len(wanted_bad)  # not retried later: BigQuery refused them
    for letter in letters:
        record = letter.to_json_dict()
        assert record["reason"] == "not_retryable"
        assert "invalid" in record["error"] and "bitrate_kbps" in record["error"]
        assert "Cannot convert value to integer" in record["error"]
    # One request per attempt, never a resend of the rows that landed.
    assert len(receiver.requests) == 1


def test_a_row_with_an_unknown_column_is_refused_by_name(
    bq: tuple[Receiver, BigQueryInsertAllApi],
) -> None:
    receiver, api = bq
    items = rows([1, 2])
    items[1] = Packaged("e1", 0, "heartbeat", {"event_id": "e1", "bitrte": 3}, {})
    sink = bq_sink(receiver)
    with pytest.raises(PartialDeliveryError) as raised:
        sink.write(DeliveryBatch("c1", "", items))
    sink.close()
    (failure,) = raised.value.failures
    assert failure.event_id == "e1" and not failure.retryable
    assert "no such field: bitrte" in failure.reason
    assert [r["event_id"] for r in api.rows[TABLE]] == ["e0"]


# -- retries ------------------------------------------------------------------------------------


def test_a_retried_timed_out_request_does_not_duplicate_rows(
    bq: tuple[Receiver, BigQueryInsertAllApi],
) -> None:
    receiver, api = bq
    receiver.slow(60, times=1)  # the first request is processed but answered too late
    sink = bq_sink(receiver, timeouts={"connect_s": 2, "read_s": 0.5})
    batch = DeliveryBatch("c1", "", rows([1, 2, 3]))
    try:
        outcome = deliver_with_retries(sink, batch, FUSED)
    finally:
        sink.close()
    receiver.release()  # let the first request finish (and commit) now
    assert receiver.wait_for(lambda r: all(q.finished for q in r.requests))
    assert outcome.delivered == 3 and outcome.possible_duplicates == 3
    assert len(receiver.requests) == 2
    ids = [json.loads(q.body)["rows"][0]["insertId"] for q in receiver.requests]
    assert ids[0] == ids[1] == "e0"
    assert sorted(r["event_id"] for r in api.rows[TABLE]) == ["e0", "e1", "e2"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, quota_error("rateLimitExceeded")),
        (403, quota_error("quotaExceeded")),
        (500, backend_error(500)),
        (503, backend_error(503)),
    ],
)
def test_quota_and_backend_errors_are_retried(
    status: int, body: bytes, bq: tuple[Receiver, BigQueryInsertAllApi]
) -> None:
    receiver, api = bq
    receiver.fail(times=2, status=status, body=body)
    sink = bq_sink(receiver)
    batch = DeliveryBatch("c1", "", rows([1, 2]))
    try:
        outcome = deliver_with_retries(sink, batch, FUSED)
    finally:
        sink.close()
    assert outcome.delivered == 2 and outcome.failed == []
    assert [q.status for q in receiver.requests] == [status, status, 200]
    assert len(api.rows[TABLE]) == 2


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (
            403,
            error_body(403, "accessDenied", "Access Denied: Table", "PERMISSION_DENIED"),
            "accessDenied",
        ),
        (400, error_body(400, "invalid", "Invalid table", "INVALID_ARGUMENT"), "invalid"),
    ],
)
def test_other_whole_request_errors_are_not_retried(
    status: int, body: bytes, shown: str, bq: tuple[Receiver, BigQueryInsertAllApi]
) -> None:
    receiver, _ = bq
    receiver.fail(times=None, status=status, body=body)
    sink = bq_sink(receiver)
    with pytest.raises(DeliveryError) as raised:
        sink.write(DeliveryBatch("c1", "", rows([1])))
    sink.close()
    assert not raised.value.retryable and raised.value.status == status
    assert shown in str(raised.value)


def test_a_missing_table_is_not_retried_and_says_so(start_receiver: StartReceiver) -> None:
    receiver = start_receiver(BigQueryInsertAllApi({"other-proj.d.t": COLUMNS}))
    sink = bq_sink(receiver)
    with pytest.raises(DeliveryError) as raised:
        sink.write(DeliveryBatch("c1", "", rows([1])))
    sink.close()
    assert not raised.value.retryable and "Not found: Table" in str(raised.value)


def test_request_shape_and_limits(bq: tuple[Receiver, BigQueryInsertAllApi]) -> None:
    receiver, api = bq
    long_id = "x" * 300
    items = [*rows([1] * 5), Packaged(long_id, 0, "heartbeat", {"event_id": long_id}, {})]
    sink = bq_sink(receiver, max_rows_per_request=2)
    result = sink.write(DeliveryBatch("c1", "", items))
    sink.close()
    assert result.events == 6 and len(receiver.requests) == 3
    assert receiver.requests[0].path == (
        "/bigquery/v2/projects/my-project/datasets/telemetry/tables/player_events/insertAll"
    )
    body = json.loads(receiver.requests[0].body)
    assert body["skipInvalidRows"] is True and body["ignoreUnknownValues"] is False
    assert receiver.requests[0].header("Authorization") is None  # http:// endpoint: anonymous
    last = json.loads(receiver.requests[2].body)["rows"][-1]["insertId"]
    assert len(last) <= 128 and last == bigquery.insert_id(long_id) != bigquery.insert_id("y")
    assert len(api.rows[TABLE]) == 6


# -- credentials ----------------------------------------------------------------------------------


def test_the_emulator_variable_wins_and_means_anonymous(
    bq: tuple[Receiver, BigQueryInsertAllApi], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, api = bq
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", receiver.url.removeprefix("http://"))
    sink = open_sink("bigquery", {"table": TABLE})  # no endpoint: googleapis.com, but emulated
    assert sink.write(DeliveryBatch("c1", "", rows([7]))).events == 1
    sink.close()
    assert api.rows[TABLE][0]["bitrate_kbps"] == 7


def test_no_credentials_is_a_clear_non_retryable_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    sink = open_sink("bigquery", {"table": TABLE, "endpoint": "https://127.0.0.1:9"})
    batch = DeliveryBatch("c1", "", rows([1, 2]))
    outcome = deliver_with_retries(sink, batch, FUSED)
    sink.close()
    assert outcome.delivered == 0 and len(outcome.failed) == 2
    error = str(outcome.failed[0][1])
    assert "Application Default Credentials" in error
    assert not outcome.failed[0][1].retryable


def test_a_token_never_reaches_an_error(
    start_receiver: StartReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ADC (a service account whose token endpoint is the receiver's), then a server that
    echoes the request's headers: the access token never shows."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    token = "ya29.a0-secret-access-token-0123456789"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    api = BigQueryInsertAllApi({TABLE: COLUMNS}, access_token=token)
    receiver = start_receiver(api)
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "writer@my-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": receiver.url + "/token",
            }
        )
    )
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    sink = bigquery.BigQuerySink(
        "c1",
        parse_config(
            config_text({"id": "c1", "type": "bigquery", "deliver": {"table": TABLE}}), "t"
        )
        .connectors[0]
        .deliver_config,
    )
    sink.root = receiver.url  # googleapis.com's place, as a private endpoint would be
    sink.open()
    try:
        assert sink.write(DeliveryBatch("c1", "", rows([1]))).events == 1
        assert receiver.requests[-1].header("Authorization") == f"Bearer {token}"
        receiver.reject_when(lambda _: True, status=400, echo_headers=True)
        with pytest.raises(DeliveryError) as raised:
            sink.write(DeliveryBatch("c1", "", rows([2])))
        assert "request_headers" in str(raised.value)  # the echo is quoted, redacted
        assert token not in str(raised.value) and token not in repr(sink)
    finally:
        sink.close()


# -- validate -------------------------------------------------------------------------------------


def connector(deliver: dict[str, Any], package: dict[str, Any] | None = None) -> Any:
    item: dict[str, Any] = {"id": "bq", "type": "bigquery", "deliver": deliver}
    if package is not None:
        item["package"] = package
    return parse_config(config_text(item), "delivery.yaml").connectors[0]


@given(
    st.one_of(
        st.text(max_size=40).filter(lambda t: t.count(".") != 2 and ":" not in t),
        st.sampled_from(
            [
                "telemetry.player_events",
                "my-project..events",
                "My_Project.telemetry.events",
                "my-project.tele-metry.events",
                "my-project.telemetry.events$20250101",
                "my-project.telemetry.",
                ".telemetry.events",
                "my-project.telemetry.events.extra",
                "p.d.t",
            ]
        ),
    )
)
def test_a_table_that_is_not_project_dataset_table_is_refused_at_validate(table: str) -> None:
    with pytest.raises(ConfigError) as raised:
        connector({"table": table})
    assert "PROJECT.DATASET.TABLE" in str(raised.value)


@pytest.mark.parametrize(
    "table", [TABLE, "example.com:my-project.telemetry.events", "my-project.d_1.T 1-x"]
)
def test_valid_table_names(table: str) -> None:
    assert connector({"table": table}).deliver_config.table == table


def test_a_declared_schema_checks_the_template() -> None:
    template = {
        "fields": {
            "event_id": "event_id",
            "bitrate_kbps": {"path": "fluxdata.bitrate", "cast": "float"},
            "extra": {"const": "x"},
            "day": {"path": "event.timestamp", "format": "%Y-%m-%d"},
        }
    }
    schema = [
        {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
        {"name": "bitrate_kbps", "type": "INT64"},
        {"name": "day", "type": "DATE"},
        {"name": "must", "type": "STRING", "mode": "REQUIRED"},
    ]
    deliver = connector({"table": TABLE, "schema": schema}).deliver_config
    problems = bigquery.check_template(template, deliver.schema)
    assert any("bitrate_kbps" in p and "FLOAT64" in p and "INT64" in p for p in problems)
    assert any("extra" in p and "no column" in p for p in problems)
    assert any("must" in p and "REQUIRED" in p for p in problems)
    assert not any("day" in p or "event_id" in p for p in problems), problems


def test_auto_derives_the_schema_from_the_bundled_template() -> None:
    schema = bigquery.derive_schema("bigquery_row")
    types = {f.name: f.type for f in schema}
    assert types["bitrate_kbps"] == "INT64" and types["playhead_sec"] == "FLOAT64"
    assert types["is_live"] == "BOOL" and types["event_time"] == "TIMESTAMP"
    assert types["event_day"] == "DATE" and types["event_type"] == "STRING"
    assert bigquery.check_template("bigquery_row", schema) == []


def test_check_record_names_what_bigquery_would_refuse() -> None:
    deliver = connector(
        {
            "table": TABLE,
            "schema": [
                {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
                {"name": "n", "type": "INT64"},
            ],
        }
    ).deliver_config
    good = Packaged("e", 0, "heartbeat", {"event_id": "e", "n": 3}, {})
    bad = Packaged("e", 0, "heartbeat", {"event_id": "e", "n": "3.5", "x": 1}, {})
    assert bigquery.check_record(good, deliver, "bq") is None
    problem = bigquery.check_record(bad, deliver, "bq")
    assert problem is not None and "'n'" in problem and "'x'" in problem


# -- a whole run ----------------------------------------------------------------------------------


def run_warehouse_job(tmp_path: Path, deliver: str) -> tuple[dict[str, Any], set[str]]:
    """Run the batch job on 60 events (every 7th with a bitrate no INT64 takes) into one
    bigquery connector (``deliver``: its method/endpoint lines); check the counts add up.

    Returns the connector's summary row and the event ids that must be dead letters, after
    checking that exactly those were dead-lettered with BigQuery's reason.
    """
    events = []
    for i in range(60):
        bitrate: Any = "fast" if i % 7 == 0 else 1000 + i
        events.append(
            {
                "event_id": f"ev-{i}",
                "event": {"type": "heartbeat", "timestamp": 1764136800123 + i},
                "fluxdata": {"bitrate": bitrate},
            }
        )
    source = tmp_path / "events.jsonl.gz"
    source.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in events).encode()))
    config = tmp_path / "delivery.yaml"
    config.write_text(
        f"""
connectors:
  - id: warehouse
    type: bigquery
    package:
      template:
        fields:
          event_id: event_id
          event_type: event.type
          bitrate_kbps: fluxdata.bitrate
    deliver:
      table: {TABLE}
      {deliver}
      batch: {{max_events: 25, max_wait_s: 1}}
dead_letter: {{path: {tmp_path / "dead"}}}
"""
    )
    code, summary = run_job(config, source, tmp_path / "summary.json")
    assert code == 0, summary
    (row,) = summary["connectors"]
    bad = {f"ev-{i}" for i in range(60) if i % 7 == 0}
    assert row["routed"] == 60
    assert row["delivered"] == 60 - len(bad) and row["dead_lettered"] == len(bad)
    assert row["delivered"] + row["dead_lettered"] == row["routed"]
    letters = [
        json.loads(line)
        for f in (tmp_path / "dead").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    assert {d["event_id"] if "event_id" in d else d["original"]["event_id"] for d in letters} == bad
    assert all("Cannot convert value to integer" in d["error"] for d in letters)
    return row, bad


def test_a_run_delivers_or_dead_letters_every_routed_event(
    bq: tuple[Receiver, BigQueryInsertAllApi], tmp_path: Path
) -> None:
    receiver, api = bq
    receiver.fail(times=1, status=403, body=quota_error())
    _, bad = run_warehouse_job(tmp_path, f"endpoint: {receiver.url}")
    stored = sorted(r["event_id"] for r in api.rows[TABLE])
    assert stored == sorted(f"ev-{i}" for i in range(60) if f"ev-{i}" not in bad)


# -- bqemulator (its own venv; see scripts/bqemulator_launcher.py for its gaps) --------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def bqemulator(tmp_path: Path) -> Iterator[str]:
    """A running bqemulator's REST root; its venv is built on first use (a failure says why)."""
    with _bqemulator(tmp_path, grpc_port=0) as root:
        yield root


@pytest.fixture
def bqemulator_grpc(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A running bqemulator's REST root and its Storage Write gRPC port."""
    grpc_port = _free_port()
    with _bqemulator(tmp_path, grpc_port=grpc_port) as root:
        yield root, grpc_port


@contextlib.contextmanager
def _bqemulator(tmp_path: Path, grpc_port: int) -> Iterator[str]:
    try:
        command = bqemulator_launcher.command(
            "--rest-port",
            str(port := _free_port()),
            "--grpc-port",
            str(grpc_port),
            "--project",
            "my-project",
        )
    except RuntimeError as exc:
        pytest.fail(f"bqemulator cannot be installed: {exc}")
    log = tmp_path / "bqemulator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when it answers a request (polled: it has no readiness signal)
            if process.poll() is not None:
                pytest.fail(f"bqemulator exited {process.returncode}: {log.read_text()[-2000:]}")
            try:
                _call(root + "/bigquery/v2/projects/my-project/datasets")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"bqemulator did not answer in 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield root
    finally:
        process.terminate()
        process.wait(timeout=30)


def _player_events_table(root: str) -> str:
    """Create ``my-project.telemetry.player_events`` with :data:`COLUMNS`; its REST path."""
    datasets = root + "/bigquery/v2/projects/my-project/datasets"
    _call(datasets, {"datasetReference": {"projectId": "my-project", "datasetId": "telemetry"}})
    fields = [{"name": n, "type": t, "mode": m} for n, t, m in COLUMNS]
    _call(
        datasets + "/telemetry/tables",
        {
            "tableReference": {
                "projectId": "my-project",
                "datasetId": "telemetry",
                "tableId": "player_events",
            },
            "schema": {"fields": fields},
        },
    )
    return datasets + "/telemetry/tables/player_events"


def _three_rows_land(table: str, deliver: dict[str, Any]) -> None:
    """Write three rows through a sink of ``deliver``; they read back from ``table``."""
    sink = open_sink("bigquery", deliver)
    try:
        assert sink.write(DeliveryBatch("c1", "", rows([4500, 3000, None]))).events == 3
    finally:
        sink.close()
    listed = _call(table + "/data")
    got = sorted(tuple(c["v"] for c in r["f"]) for r in listed["rows"])
    assert got == [
        ("e0", "heartbeat", "4500"),
        ("e1", "heartbeat", "3000"),
        ("e2", "heartbeat", None),
    ]


@pytest.mark.integration
def test_storage_write_rows_land_in_bqemulator_and_read_back(
    bqemulator_grpc: tuple[str, int],
) -> None:
    """The Storage Write path against bqemulator's own gRPC server (not our stand-in)."""
    root, grpc_port = bqemulator_grpc
    table = _player_events_table(root)
    deliver = {
        "table": TABLE,
        "method": "storage_write",
        "endpoint": f"http://127.0.0.1:{grpc_port}",
    }
    _three_rows_land(table, deliver)


@pytest.mark.integration
def test_rows_land_in_bqemulator_and_read_back(
    bqemulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _player_events_table(bqemulator)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bqemulator.removeprefix("http://"))
    _three_rows_land(table, {"table": TABLE})


def test_without_a_template_only_records_are_checked() -> None:
    schema = connector({"table": TABLE, "schema": [{"name": "a", "type": "INT64"}]})
    assert bigquery.check_template(None, schema.deliver_config.schema) == []


class _GarbledAnswers(BigQueryInsertAllApi):
    """Answers 200 with an insertErrors index that names no row of the request."""

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        reply = super().handle(method, path, headers, body)
        reply.body = b'{"insertErrors":[{"index":99,"errors":[{"reason":"invalid"}]}]}'
        return reply


def test_an_unreadable_answer_is_retryable_with_outcome_unknown(
    start_receiver: StartReceiver,
) -> None:
    receiver = start_receiver(_GarbledAnswers({TABLE: COLUMNS}))
    sink = bq_sink(receiver)
    with pytest.raises(DeliveryError) as raised:
        sink.write(DeliveryBatch("c1", "", rows([1, 2])))
    sink.close()
    assert raised.value.retryable and raised.value.outcome_unknown
    assert "insertId" in str(raised.value)
