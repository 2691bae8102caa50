"""The API sinks one call at a time, against the real stand-in receivers (no pipeline).

What the pipeline-level compliance suite (test_api_connectors.py) cannot pin down
precisely: the shared response policy, Retry-After parsing, request splitting by each
API's limits, per-entry results, redaction, and concurrent use of one sink.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import random
import string
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from tests.receivers.apis import (
    DatadogLogsApi,
    ElasticsearchBulkApi,
    ItemFault,
    NewRelicEventApi,
    SplunkHecApi,
)
from tests.receivers.base import Receiver
from tests.receivers.credentials import (
    DD_API_KEY,
    ES_API_KEY,
    NEW_RELIC_ACCOUNT,
    NEW_RELIC_KEY,
    SPLUNK_TOKEN,
    WEBHOOK_AUTH,
    WEBHOOK_PATH,
)
from transforms.connectors import CONNECTORS, make_sink
from transforms.connectors._api import Timeouts, split_parts
from transforms.connectors._http import HttpClient, classify, parse_retry_after
from transforms.connectors.base import DeliveryBatch, DeliveryError, PartialDeliveryError, Sink
from transforms.connectors.new_relic import to_event
from transforms.rules.records import Packaged

pytest_plugins = ["tests.receivers.fixtures"]


def items(n: int, size: int = 0, start: int = 0, **extra: Any) -> list[Packaged]:
    """``n`` packaged events; ``size`` pads each record with that many random characters."""
    rng = random.Random(start)
    out = []
    for i in range(start, start + n):
        record: dict[str, Any] = {"event_id": f"e{i}", "event_type": "heartbeat", **extra}
        if size:
            record["pad"] = "".join(rng.choices(string.ascii_letters + string.digits, k=size))
        out.append(Packaged(f"e{i}", 1764136800123 + i, "heartbeat", record, {"event_id": f"e{i}"}))
    return out


def batch(records: list[Packaged], cid: str = "c1") -> DeliveryBatch:
    return DeliveryBatch(cid, "", records)


def sink_for(kind: str, deliver: dict[str, Any]) -> Sink:
    model = CONNECTORS[kind].deliver_model.model_validate(deliver)
    sink = make_sink("c1", kind, model)
    sink.open()
    return sink


@pytest.fixture
def sinks() -> Any:
    opened: list[Sink] = []

    def make(kind: str, **deliver: Any) -> Sink:
        s = sink_for(kind, deliver)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


# -- the shared policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 26 Nov 2025 06:00:10 GMT", 10.0),
        ("Wed, 26 Nov 2025 05:59:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2025, 11, 26, 6, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after(value, now) == expected


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (200, None),
        (201, None),
        (202, None),
        (204, None),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (413, False),
        (422, False),
    ],
)
def test_classify(status: int, retryable: bool | None) -> None:
    error = classify(status, {"Retry-After": "2"}, b'{"error": "x"}', "t POST /p")
    if retryable is None:
        assert error is None
        return
    assert error is not None
    assert error.retryable is retryable and error.status == status
    assert error.retry_after_s == (2.0 if status in (429, 503) else None)
    assert f"HTTP {status}" in str(error) and '{"error": "x"}' in str(error)


def test_error_excerpt_is_short_one_line_and_redacted() -> None:
    body = ("line one\n  secret-token-123 " + "x" * 5000).encode()
    error = classify(400, {}, body, "t", secrets=("secret-token-123",))
    assert error is not None
    text = str(error)
    assert "\n" not in text and "secret-token-123" not in text and "***" in text
    assert len(text) < 300


def test_client_errors_for_refused_and_hung_connections(
    start_receiver: Any, receivers: dict[str, Receiver]
) -> None:
    receiver = receivers["http"]
    client = HttpClient("http", 2, Timeouts(connect_s=1, read_s=0.3), secrets=("hidden-value",))
    client.open()
    try:
        receiver.hang(seconds=30)
        with pytest.raises(DeliveryError) as hung:
            client.send("POST", receiver.url + "/x", b"[]", {"X-Secret": "hidden-value"})
        assert hung.value.retryable and hung.value.status is None
        assert "no response within 0.3 s" in str(hung.value) and hung.value.outcome_unknown
        receiver.clear_faults()
        receiver.hang(seconds=0.05)  # then drops the connection without an answer
        with pytest.raises(DeliveryError) as dropped:
            client.send("POST", receiver.url + "/x", b"[]", {"X-Secret": "hidden-value"})
        assert dropped.value.retryable and dropped.value.outcome_unknown
        assert "connection failed" in str(dropped.value)
        receiver.clear_faults()
        receiver.reject_when(lambda items: True, status=503, echo_headers=True)
        with pytest.raises(DeliveryError) as echoed:
            client.send("POST", receiver.url + "/x", b"[]", {"X-Secret": "hidden-value"})
        assert b"hidden-value" in receiver.snapshot()[0][-1].response, "the server echoed it"
        assert echoed.value.retryable and echoed.value.status == 503
        assert "***" in str(echoed.value)
        receiver.outage()
        with pytest.raises(DeliveryError) as down:
            client.send("POST", receiver.url + "/x", b"[]", {"X-Secret": "hidden-value"})
        assert down.value.retryable and "Connection refused" in str(down.value)
        assert not down.value.outcome_unknown  # never sent: resending cannot duplicate
        assert down.value.__cause__ is None and down.value.__suppress_context__
        for error in (hung.value, dropped.value, echoed.value, down.value):
            assert "hidden-value" not in str(error) + repr(error.args)
    finally:
        client.close()


# -- Datadog limits ---------------------------------------------------------------------------


def test_datadog_splits_by_entry_count(receivers: dict[str, Receiver], sinks: Any) -> None:
    receiver = receivers["datadog_logs"]
    sink = sinks("datadog_logs", endpoint=receiver.url, api_key=DD_API_KEY)
    result = sink.write(batch(items(2500)))
    assert result.events == 2500
    requests, got = receiver.snapshot()
    assert [len(r.items) for r in requests] == [1000, 1000, 500]
    assert all(r.status == 202 for r in requests)
    assert [g["event_id"] for g in got] == [f"e{i}" for i in range(2500)]
    assert result.bytes == sum(len(r.body) for r in requests)


def test_datadog_splits_by_payload_size_and_refuses_logs_over_1mb(
    receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers["datadog_logs"]
    sink = sinks("datadog_logs", endpoint=receiver.url, api_key=DD_API_KEY, compression="none")
    records = items(12, size=900_000)
    big = items(1, size=1_100_000, start=100)[0]
    records.insert(5, big)
    with pytest.raises(PartialDeliveryError) as err:
        sink.write(batch(records))
    exc = err.value
    assert exc.failed_event_ids == ("e100",)
    assert not exc.failures[0].retryable and "1 MB" in exc.failures[0].reason
    assert exc.delivered.events == 12 and not exc.retryable
    requests, got = receiver.snapshot()
    assert all(len(r.body) <= 5_000_000 for r in requests) and len(requests) == 3
    assert sorted(g["event_id"] for g in got) == sorted(f"e{i}" for i in range(12))
    assert isinstance(receiver.api, DatadogLogsApi) and receiver.api.truncated == []


def test_datadog_sends_nothing_more_after_a_retryable_failure(
    receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers["datadog_logs"]
    sink = sinks("datadog_logs", endpoint=receiver.url, api_key=DD_API_KEY)
    receiver.fail(times=1, status=500)  # the first of three requests
    with pytest.raises(DeliveryError) as err:
        sink.write(batch(items(2500)))
    assert type(err.value) is DeliveryError and err.value.retryable  # nothing delivered
    assert len(receiver.snapshot()[0]) == 1  # the other two were not sent


def test_datadog_partial_when_a_later_request_fails(
    receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers["datadog_logs"]
    sink = sinks("datadog_logs", endpoint=receiver.url, api_key=DD_API_KEY)
    receiver.fail(times=1, status=502, after=1)  # the second of three requests
    b = batch(items(2500))
    with pytest.raises(PartialDeliveryError) as err:
        sink.write(b)
    exc = err.value
    assert exc.delivered.events == 1000 and exc.retryable and exc.status == 502
    assert exc.failed_event_ids == tuple(f"e{i}" for i in range(1000, 2500))
    assert len(receiver.snapshot()[0]) == 2
    again = exc.retry_batch(b)
    assert again is not None and sink.write(again).events == 1500
    _, got = receiver.snapshot()
    assert sorted(g["event_id"] for g in got) == sorted(f"e{i}" for i in range(2500))


# -- New Relic limits -------------------------------------------------------------------------


def test_new_relic_splits_to_1mb_compressed_and_refuses_what_cannot_fit(
    receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers["new_relic"]
    sink = sinks(
        "new_relic", endpoint=receiver.url, account_id=NEW_RELIC_ACCOUNT, api_key=NEW_RELIC_KEY
    )
    # Random text barely compresses: 30 x 150 kB cannot go in one 1 MB request.
    records = items(30, size=150_000, eventType="VideoPlayerEvent")
    records.append(items(1, size=1_500_000, start=99, eventType="VideoPlayerEvent")[0])
    records.append(items(1, start=98)[0])  # no eventType
    with pytest.raises(PartialDeliveryError) as err:
        sink.write(batch(records))
    exc = err.value
    assert set(exc.failed_event_ids) == {"e99", "e98"}
    assert all(not f.retryable for f in exc.failures)
    assert exc.delivered.events == 30
    requests, got = receiver.snapshot()
    assert len(requests) >= 5 and all(r.status == 200 for r in requests)
    assert all(len(r.body) <= 1_000_000 for r in requests)
    assert sorted(g["event_id"] for g in got) == sorted(f"e{i}" for i in range(30))
    assert isinstance(receiver.api, NewRelicEventApi) and receiver.api.async_errors == []


def test_new_relic_events_are_flat() -> None:
    event, why = to_event({"eventType": "X", "a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}})
    assert why is None
    assert event == {"eventType": "X", "a.b.c": 1, "a.d": "[1,2]"}  # empty objects vanish
    assert to_event({"a": 1})[0] is None
    assert to_event({"eventType": "bad-type!"})[0] is None
    assert to_event({"eventType": "X", **{f"k{i}": i for i in range(300)}})[0] is None


# -- Elasticsearch per-item results ---------------------------------------------------------


def test_elasticsearch_partial_failure_names_each_failed_document(
    start_receiver: Any, sinks: Any
) -> None:
    api = ElasticsearchBulkApi(api_key=ES_API_KEY)
    api.item_faults["e3"] = ItemFault(429, times=1)
    api.item_faults["e7"] = ItemFault(400, "mapper_parsing_exception", "failed to parse [x]")
    receiver = start_receiver(api)
    sink = sinks("elasticsearch", endpoint=receiver.url, index="video", api_key=ES_API_KEY)
    b = batch(items(10))
    with pytest.raises(PartialDeliveryError) as err:
        sink.write(b)
    exc = err.value
    assert exc.failed_event_ids == ("e3", "e7")
    assert [(f.status, f.retryable) for f in exc.failures] == [(429, True), (400, False)]
    assert "mapper_parsing_exception" in exc.failures[1].reason
    assert exc.delivered.events == 8 and exc.retryable and exc.retry_after_s is None
    assert set(exc.failed) == {"e3", "e7"} and exc.failed["e7"].retryable is False
    again = exc.retry_batch(b)
    assert again is not None and [i.event_id for i in again.items] == ["e3"]
    assert [i.event_id for i, _ in exc.dead_items(b)] == ["e7"]
    assert sink.write(again).events == 1
    assert dict(api.ops) == {f"e{i}": 1 for i in range(10) if i != 7}


def test_elasticsearch_create_treats_conflicts_as_delivered(
    start_receiver: Any, sinks: Any
) -> None:
    api = ElasticsearchBulkApi(username="writer", password="pw-1234567")
    receiver = start_receiver(api)
    sink = sinks(
        "elasticsearch",
        endpoint=receiver.url,
        index="video",
        username="writer",
        password="pw-1234567",
        op_type="create",
    )
    assert sink.write(batch(items(5))).events == 5
    assert sink.write(batch(items(5))).events == 5  # all 409: already there
    requests, _ = receiver.snapshot()
    second = json.loads(requests[1].response)
    assert {item["create"]["status"] for item in second["items"]} == {409}
    assert len(api.docs) == 5


def test_elasticsearch_refuses_bad_credentials_and_content_type(
    start_receiver: Any, sinks: Any
) -> None:
    receiver = start_receiver(ElasticsearchBulkApi(api_key=ES_API_KEY))
    sink = sinks("elasticsearch", endpoint=receiver.url, index="video", api_key="bm90LXRoaXM=")
    with pytest.raises(DeliveryError) as err:
        sink.write(batch(items(2)))
    assert err.value.status == 401 and not err.value.retryable
    assert "bm90LXRoaXM=" not in str(err.value)
    requests, _ = receiver.snapshot()
    assert requests[0].header("Content-Type") == "application/x-ndjson"


def test_elasticsearch_body_is_action_document_pairs(start_receiver: Any, sinks: Any) -> None:
    api = ElasticsearchBulkApi(api_key=ES_API_KEY)
    receiver = start_receiver(api)
    sink = sinks(
        "elasticsearch",
        endpoint=receiver.url,
        index="video",
        api_key=ES_API_KEY,
        compression="none",
    )
    sink.write(batch(items(2)))
    body = receiver.snapshot()[0][0].body
    lines = body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    assert json.loads(lines[0]) == {"index": {"_index": "video", "_id": "e0"}}
    assert json.loads(lines[1])["event_id"] == "e0"


# -- Splunk ------------------------------------------------------------------------------------


def test_splunk_envelope_and_invalid_event_number(start_receiver: Any, sinks: Any) -> None:
    api = SplunkHecApi(SPLUNK_TOKEN, indexes=("video",))
    api.bad_event = lambda ev: ev["event"]["event_id"] == "e4"
    receiver = start_receiver(api)
    sink = sinks("splunk_hec", endpoint=receiver.url, token=SPLUNK_TOKEN, index="video")
    with pytest.raises(PartialDeliveryError) as err:
        sink.write(batch(items(10)))
    exc = err.value
    assert exc.delivered.events == 4
    assert [(f.event_id, f.retryable) for f in exc.failures] == [("e4", False)] + [
        (f"e{i}", True) for i in range(5, 10)
    ]
    _, got = receiver.snapshot()
    assert [g["event"]["event_id"] for g in got] == ["e0", "e1", "e2", "e3"]
    assert got[1] == {
        "time": 1764136800.124,
        "source": "video-telemetry",
        "sourcetype": "_json",
        "index": "video",
        "event": {"event_id": "e1", "event_type": "heartbeat"},
    }


def test_splunk_incorrect_index_fails_the_whole_request(start_receiver: Any, sinks: Any) -> None:
    receiver = start_receiver(SplunkHecApi(SPLUNK_TOKEN, indexes=("main",)))
    sink = sinks("splunk_hec", endpoint=receiver.url, token=SPLUNK_TOKEN, index="video")
    with pytest.raises(DeliveryError) as err:
        sink.write(batch(items(10)))
    assert type(err.value) is DeliveryError
    assert err.value.status == 400 and not err.value.retryable
    assert "Incorrect index" in str(err.value)


def test_splunk_splits_by_max_request_bytes(start_receiver: Any, sinks: Any) -> None:
    api = SplunkHecApi(SPLUNK_TOKEN, max_content_length=100_000)
    receiver = start_receiver(api)
    sink = sinks(
        "splunk_hec",
        endpoint=receiver.url,
        token=SPLUNK_TOKEN,
        max_request_bytes=100_000,
        compression="none",
    )
    assert sink.write(batch(items(50, size=9_000))).events == 50
    requests, got = receiver.snapshot()
    assert len(requests) >= 5 and all(r.status == 200 for r in requests)
    assert len(got) == 50


# -- webhook ------------------------------------------------------------------------------------


def test_webhook_json_array_put_and_split(start_receiver: Any, sinks: Any) -> None:
    from tests.receivers.apis import WebhookApi

    api = WebhookApi("/in/", {"Authorization": WEBHOOK_AUTH}, "json_array", "PUT", 60_000)
    receiver = start_receiver(api)
    sink = sinks(
        "http",
        endpoint=receiver.url + "/in/",
        method="PUT",
        headers={"Authorization": WEBHOOK_AUTH},
        max_request_bytes=60_000,
    )
    assert sink.write(batch(items(40, size=5_000))).events == 40
    requests, got = receiver.snapshot()
    assert len(requests) >= 4 and {r.status for r in requests} == {200}
    assert [g["event_id"] for g in got] == [f"e{i}" for i in range(40)]
    assert all(r.header("Content-Type") == "application/json" for r in requests)


def test_webhook_gzip_ndjson(receivers: dict[str, Receiver], sinks: Any) -> None:
    receiver = receivers["http"]
    sink = sinks(
        "http",
        endpoint=receiver.url + WEBHOOK_PATH,
        headers={"Authorization": WEBHOOK_AUTH, "X-Source": "telemetry"},
        body="ndjson",
        compression="gzip",
    )
    sink.write(batch(items(3)))
    body = receiver.snapshot()[0][0].body
    assert gzip.decompress(body).count(b"\n") == 3


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "datadog_logs", "elasticsearch"])
def test_one_sink_is_safe_to_share_between_threads(
    kind: str, receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers[kind]
    receiver.slow(0.02)  # keep requests overlapping
    choices: dict[str, dict[str, Any]] = {
        "http": {
            "endpoint": receiver.url + WEBHOOK_PATH,
            "headers": {"Authorization": WEBHOOK_AUTH, "X-Source": "telemetry"},
            "body": "ndjson",
        },
        "datadog_logs": {"endpoint": receiver.url, "api_key": DD_API_KEY},
        "elasticsearch": {"endpoint": receiver.url, "index": "v", "api_key": ES_API_KEY},
    }
    sink = sinks(kind, concurrency=4, **choices[kind])
    batches = [batch(items(50, start=i * 50)) for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(sink.write, batches))
    assert sum(r.events for r in results) == 2000
    requests, got = receiver.snapshot()
    ids = [g.get("event_id") or g.get("_id") for g in got]
    assert sorted(ids) == sorted(f"e{i}" for i in range(2000))
    peers = {r.peer for r in requests}
    assert 1 < len(peers) <= 4, f"{len(peers)} connections for a pool of 4"


def test_retry_after_http_date_reaches_the_error(
    receivers: dict[str, Receiver], sinks: Any
) -> None:
    receiver = receivers["datadog_logs"]
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    receiver.throttle(times=1, retry_after=format_datetime(when, usegmt=True))
    sink = sinks("datadog_logs", endpoint=receiver.url, api_key=DD_API_KEY)
    with pytest.raises(DeliveryError) as err:
        sink.write(batch(items(1)))
    assert err.value.status == 429 and err.value.retryable
    assert err.value.retry_after_s is not None and 1.0 <= err.value.retry_after_s <= 3.0


def test_split_parts_keeps_order_and_limits() -> None:
    entries = [os.urandom(n) for n in (10, 10, 30, 5, 50, 10)]
    parts, too_large = split_parts(entries, max_entries=2, max_bytes=40, max_entry_bytes=40)
    assert too_large == [(4, 50)]
    assert [p.indices for p in parts] == [(0, 1), (2, 3), (5,)]
    for p in parts:
        assert len(p.indices) <= 2 and p.size + len(p.indices) - 1 + 2 <= 40
