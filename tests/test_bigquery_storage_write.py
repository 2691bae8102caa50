"""``type: bigquery`` with ``method: storage_write`` (the Storage Write API over gRPC).

Against the strict in-process ``BigQueryWrite`` stand-in (tests/receivers/bigquery.py, real
gRPC, the library's own messages): a wrongly typed row is that event's dead letter while
the others land; a row BigQuery refuses (``row_errors``) is that event's dead letter and the
rest are appended at the same offset; an append whose answer was lost (UNAVAILABLE and the
other retryable codes after the rows were committed) is retried at the same offset and
stored once; a whole run's counts add up. Against ``bqemulator``'s own gRPC server rows
land and read back through its REST API: tests/test_bigquery.py
(``test_storage_write_rows_land_in_bqemulator_and_read_back``, beside the REST one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.receivers.bigquery import BigQueryWriteStandIn
from tests.test_bigquery import COLUMNS, FUSED, TABLE, connector, rows, run_warehouse_job
from tests.test_connector_contract import open_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError, PartialDeliveryError
from transforms.rules.records import Packaged
from transforms.rules.retry import deliver_with_retries, settle_failures


@pytest.fixture
def stand_in() -> Iterator[BigQueryWriteStandIn]:
    server = BigQueryWriteStandIn({TABLE: COLUMNS})
    yield server
    server.stop()


def sw_sink(server: BigQueryWriteStandIn, **deliver: Any) -> Any:
    base = {
        "table": TABLE,
        "method": "storage_write",
        "endpoint": server.url,
        "timeouts": {"connect_s": 2, "read_s": 5},
    }
    return open_sink("bigquery", {**base, **deliver})


def test_storage_write_is_accepted_at_validate() -> None:
    deliver = connector({"table": TABLE, "method": "storage_write"}).deliver_config
    assert deliver.method == "storage_write"
    assert connector({"table": TABLE}).deliver_config.method == "streaming_inserts"


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(st.booleans(), min_size=1, max_size=40))
def test_wrongly_typed_rows_are_dead_letters_the_others_land(bad: list[bool]) -> None:
    server = BigQueryWriteStandIn({TABLE: COLUMNS})
    sink = sw_sink(server)
    batch = DeliveryBatch("c1", "", rows(["4500kbps" if b else 4500 for b in bad]))
    try:
        outcome = deliver_with_retries(sink, batch, FUSED)
    finally:
        sink.close()
        server.stop()
    wanted_bad = {f"e{i}" for i, b in enumerate(bad) if b}
    landed = [r["event_id"] for r in server.rows[TABLE]]
    assert sorted(landed) == sorted({f"e{i}" for i in range(len(bad))} - wanted_bad)
    assert outcome.delivered == len(bad) - len(wanted_bad)
    assert {item.event_id for item, _, _ in outcome.failed} == wanted_bad
    _, letters = settle_failures(batch, outcome, (300.0,), delayed_enabled=True)
    assert len(letters) == len(wanted_bad)  # not retried later: the row cannot be encoded
    for letter in letters:
        record = letter.to_json_dict()
        assert record["reason"] == "not_retryable"
        assert (
            "bitrate_kbps" in record["error"]
            and "Cannot convert value to integer" in (record["error"])
        )
    # At most one append, at offset 0, and never a resend of rows that landed.
    assert [(o, n) for _, o, n, _ in server.appends] == (
        [(0, len(bad) - len(wanted_bad))] if len(wanted_bad) < len(bad) else []
    )


def test_a_row_bigquery_refuses_is_a_dead_letter_and_the_rest_land_once(
    stand_in: BigQueryWriteStandIn,
) -> None:
    items = rows([1, 2, 3])
    items[1] = Packaged("e1", 0, "heartbeat", {"event_type": "heartbeat", "bitrate_kbps": 2}, {})
    sink = sw_sink(stand_in)
    try:
        with pytest.raises(PartialDeliveryError) as raised:
            sink.write(DeliveryBatch("c1", "", items))
    finally:
        sink.close()
    (failure,) = raised.value.failures
    assert failure.event_id == "e1" and not failure.retryable
    assert "Missing required field: event_id" in failure.reason
    assert raised.value.delivered.events == 2
    assert [r["event_id"] for r in stand_in.rows[TABLE]] == ["e0", "e2"]
    assert [(o, n, what) for _, o, n, what in stand_in.appends] == [
        (0, 3, "ROW_ERRORS"),
        (0, 2, "OK"),
    ]


@pytest.mark.parametrize(
    ("code", "commit"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.INTERNAL, True),
        (grpc.StatusCode.ABORTED, True),
        (grpc.StatusCode.UNAVAILABLE, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ],
)
def test_a_retried_append_does_not_duplicate_rows(
    code: grpc.StatusCode, commit: bool, stand_in: BigQueryWriteStandIn
) -> None:
    stand_in.fail(times=1, code=code, commit=commit)
    sink = sw_sink(stand_in)
    try:
        first = deliver_with_retries(sink, DeliveryBatch("c1", "", rows([1, 2, 3])), FUSED)
        second = deliver_with_retries(sink, DeliveryBatch("c1", "", rows([4], "f")), FUSED)
    finally:
        sink.close()
    assert first.delivered == 3 and first.failed == [] and first.retries == 1
    assert second.delivered == 1 and second.failed == []
    assert sorted(r["event_id"] for r in stand_in.rows[TABLE]) == ["e0", "e1", "e2", "f0"]
    outcomes = [(o, what) for _, o, _, what in stand_in.appends]
    again = "ALREADY_EXISTS" if commit else "OK"
    assert outcomes == [(0, code.name), (0, again), (3, "OK")]


def test_a_missing_table_is_not_retried_and_says_so() -> None:
    server = BigQueryWriteStandIn({"other-proj.d.t": COLUMNS})
    sink = sw_sink(server)
    try:
        with pytest.raises(DeliveryError) as raised:
            sink.write(DeliveryBatch("c1", "", rows([1])))
    finally:
        sink.close()
        server.stop()
    assert not raised.value.retryable and "Not found: Table" in str(raised.value)


def test_a_dead_server_is_retryable_and_names_the_target() -> None:
    server = BigQueryWriteStandIn({TABLE: COLUMNS})
    url = server.url
    server.stop()
    sink = open_sink(
        "bigquery",
        {
            "table": TABLE,
            "method": "storage_write",
            "endpoint": url,
            "timeouts": {"connect_s": 1, "read_s": 2},
        },
    )
    try:
        with pytest.raises(DeliveryError) as raised:
            sink.write(DeliveryBatch("c1", "", rows([1])))
    finally:
        sink.close()
    assert raised.value.retryable and "UNAVAILABLE" in str(raised.value)


def test_a_run_delivers_or_dead_letters_every_routed_event(
    stand_in: BigQueryWriteStandIn, tmp_path: Path
) -> None:
    stand_in.fail(times=1, code=grpc.StatusCode.UNAVAILABLE, commit=True)
    _, bad = run_warehouse_job(tmp_path, f"method: storage_write\n      endpoint: {stand_in.url}")
    stored = sorted(r["event_id"] for r in stand_in.rows[TABLE])
    assert stored == sorted(f"ev-{i}" for i in range(60) if f"ev-{i}" not in bad)  # once each
