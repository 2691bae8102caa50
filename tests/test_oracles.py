"""Independent oracles for promises the rest of the suite checked only against itself.

Each expected value here is written by hand from the documented contract (README,
docs/api-connectors.md, the templates' comments), never computed with
``transforms.rules``, so a bug in a rule, a template or a default shows up as a
difference instead of being reproduced on both sides of the comparison (issue 22):

* what each API template makes of a known event, as the stand-in API stores it;
* the end-of-run summary when the counts disagree (``MISMATCH``, exit code 1);
* the exact default delayed-retry schedule, and the walk a config without ``retry`` makes;
* atomic local writes: a reader never sees part of a file;
* a secret echoed back by a failing server never reaches a retry record.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import Metrics
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_pipeline.cli import _finish
from beam_pipeline.summary import format_summary, summarize
from tests.jobs import run_job
from tests.receivers.base import Receiver
from tests.receivers.credentials import NEW_RELIC_ACCOUNT, WEBHOOK_AUTH, WEBHOOK_PATH
from transforms.config import parse_config
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink, WriteResult
from transforms.connectors.file import write_bytes
from transforms.rules.records import Packaged, RetryRecord
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures

pytest_plugins = ["tests.receivers.fixtures"]


def run(tmp: Path, config_yaml: str, lines: list[str]) -> tuple[int, dict[str, Any]]:
    """Run the real job (``run`` on Beam's FnApiRunner); its exit code and JSON summary."""
    cfg, source, summary = tmp / "delivery.yaml", tmp / "events.jsonl", tmp / "summary.json"
    cfg.write_text(config_yaml)
    source.write_text("\n".join(lines) + "\n")
    return run_job(cfg, source, summary)


# -- the API templates, against the documented destination formats ---------------------------

# Two known events: one timed in epoch ms with a device model, one timed as an ISO string
# without one. 1764136800123 ms is 2025-11-26T06:00:00.123Z (`date -u -d @1764136800`).
EV_MS: dict[str, Any] = {
    "event_id": "s1-1",
    "session_id": "s1",
    "event": {"type": "heartbeat", "timestamp": 1764136800123},
    "metadata": {
        "device": {"os": "iOS", "model": "iPhone15,2"},
        "geo": {"country_code": "US"},
    },
    "fluxdata": {"bandwidth_kbps": 12000, "buffer_length_ms": 8000},
}
EV_ISO: dict[str, Any] = {
    "event_id": "s2-7",
    "session_id": "s2",
    "event": {"type": "error", "timestamp": "2025-11-26T06:00:05.250Z"},
    "metadata": {"player": {"name": "hls.js"}},
    "fluxdata": {"num_errors": 1},
}


def datadog_log(event: dict[str, Any], hostname: str, epoch_ms: int) -> dict[str, Any]:
    """A Datadog Logs intake v2 log object: the reserved attributes (``timestamp`` in epoch
    ms, ``message`` the log line) plus the event's own keys as attributes."""
    return {
        **event,
        "ddsource": "video-player",
        "ddtags": "source:video-telemetry",
        "service": "video-telemetry",
        "hostname": hostname,
        "message": event["event"]["type"],
        "timestamp": epoch_ms,
    }


DATADOG = {
    "s1-1": datadog_log(EV_MS, "iPhone15,2", 1764136800123),
    "s2-7": datadog_log(EV_ISO, "unknown", 1764136805250),
}

# Splunk HEC: {"time": epoch seconds, source, sourcetype, index, "event": payload}; host is
# left out when deliver.host is null. The payload's timestamp is ISO-8601.
SPLUNK = {
    "s1-1": {
        "time": 1764136800.123,
        "source": "video-telemetry",
        "sourcetype": "_json",
        "index": "video",
        "event": {
            "event_id": "s1-1",
            "session_id": "s1",
            "event_type": "heartbeat",
            "timestamp": "2025-11-26T06:00:00.123Z",
            "metadata": EV_MS["metadata"],
            "fluxdata": EV_MS["fluxdata"],
        },
    },
    "s2-7": {
        "time": 1764136805.25,
        "source": "video-telemetry",
        "sourcetype": "_json",
        "index": "video",
        "event": {
            "event_id": "s2-7",
            "session_id": "s2",
            "event_type": "error",
            "timestamp": "2025-11-26T06:00:05.250Z",
            "metadata": EV_ISO["metadata"],
            "fluxdata": EV_ISO["fluxdata"],
        },
    },
}

# New Relic Event API: flat events, eventType, timestamp in epoch ms, dotted attributes.
NEW_RELIC = {
    "s1-1": {
        "eventType": "VideoPlayerEvent",
        "timestamp": 1764136800123,
        "event_id": "s1-1",
        "session_id": "s1",
        "event_type": "heartbeat",
        "metadata.device.os": "iOS",
        "metadata.device.model": "iPhone15,2",
        "metadata.geo.country_code": "US",
        "fluxdata.bandwidth_kbps": 12000,
        "fluxdata.buffer_length_ms": 8000,
    },
    "s2-7": {
        "eventType": "VideoPlayerEvent",
        "timestamp": 1764136805250,
        "event_id": "s2-7",
        "session_id": "s2",
        "event_type": "error",
        "metadata.player.name": "hls.js",
        "fluxdata.num_errors": 1,
    },
}

# Elasticsearch _bulk: action {"index": {"_index", "_id": event_id}} (op_type index by
# default), then the document with @timestamp as ISO-8601 and no raw event.timestamp.
ELASTICSEARCH = {
    "s1-1": {
        "_index": "video-events",
        "_id": "s1-1",
        "doc": {
            "@timestamp": "2025-11-26T06:00:00.123Z",
            "event_id": "s1-1",
            "session_id": "s1",
            "event_type": "heartbeat",
            "metadata": EV_MS["metadata"],
            "fluxdata": EV_MS["fluxdata"],
        },
    },
    "s2-7": {
        "_index": "video-events",
        "_id": "s2-7",
        "doc": {
            "@timestamp": "2025-11-26T06:00:05.250Z",
            "event_id": "s2-7",
            "session_id": "s2",
            "event_type": "error",
            "metadata": EV_ISO["metadata"],
            "fluxdata": EV_ISO["fluxdata"],
        },
    },
}


def stored_id(kind: str, item: dict[str, Any]) -> str:
    if kind == "splunk_hec":
        return str(item["event"]["event_id"])
    if kind == "elasticsearch":
        return str(item["_id"])
    return str(item["event_id"])


def test_each_api_template_stores_the_documented_record(
    tmp_path: Path, receivers: dict[str, Receiver], secret_env: dict[str, str]
) -> None:
    def url(kind: str) -> str:
        return receivers[kind].url

    config = f"""
connectors:
  - id: dd
    type: datadog_logs
    package: {{template: datadog_logs}}
    deliver: {{endpoint: '{url("datadog_logs")}', api_key: '${{env:TEST_DD_API_KEY}}'}}
  - id: splunk
    type: splunk_hec
    package: {{template: splunk_hec}}
    deliver:
      endpoint: '{url("splunk_hec")}'
      token: '${{env:TEST_SPLUNK_TOKEN}}'
      index: video
  - id: nr
    type: new_relic
    package: {{template: new_relic}}
    deliver:
      endpoint: '{url("new_relic")}'
      account_id: {NEW_RELIC_ACCOUNT}
      api_key: '${{env:TEST_NEW_RELIC_KEY}}'
  - id: es
    type: elasticsearch
    package: {{template: elasticsearch}}
    deliver:
      endpoint: '{url("elasticsearch")}'
      index: video-events
      api_key: '${{env:TEST_ES_API_KEY}}'
dead_letter: {{path: '{tmp_path}/dead'}}
"""
    code, summary = run(tmp_path, config, [json.dumps(EV_MS), json.dumps(EV_ISO)])
    assert code == 0
    assert [(r["id"], r["delivered"]) for r in summary["connectors"]] == [
        ("dd", 2),
        ("splunk", 2),
        ("nr", 2),
        ("es", 2),
    ]
    for kind, expected in (
        ("datadog_logs", DATADOG),
        ("splunk_hec", SPLUNK),
        ("new_relic", NEW_RELIC),
        ("elasticsearch", ELASTICSEARCH),
    ):
        _, stored = receivers[kind].snapshot()
        got = {stored_id(kind, item): item for item in stored}
        assert len(got) == len(stored) == 2, f"{kind}: {stored}"
        for event_id, record in expected.items():
            assert got[event_id] == record, f"{kind} {event_id}"
    es_requests, _ = receivers["elasticsearch"].snapshot()
    assert [item["action"] for r in es_requests for item in r.items] == ["index", "index"]


# -- the summary when the counts disagree -----------------------------------------------------

SUMMARY_CONFIG = """
connectors:
  - {id: c1, type: file, deliver: {path: /nowhere/c1}}
  - {id: c2, type: file, deliver: {path: /nowhere/c2}}
dead_letter: {path: /nowhere/dead}
"""


def counters(c1_delivered: int, lines_read: int = 12) -> dict[tuple[str, str], int]:
    """Counter values as Beam reports them: 12 lines = 10 events + 1 invalid + 1 blank;
    c1 routed 10 (7 + ``c1_delivered - 7`` delivered, 2 retrying, 1 dead letter), c2
    routed 4 and delivered 4."""
    return {
        ("telemetry", "lines_read"): lines_read,
        ("telemetry", "events"): 10,
        ("telemetry", "invalid"): 1,
        ("telemetry", "blank_lines"): 1,
        ("connector.c1", "routed"): 10,
        ("connector.c1", "delivered"): c1_delivered,
        ("connector.c1", "retried_delayed"): 2,
        ("connector.c1", "dead_lettered"): 1,
        ("connector.c2", "routed"): 4,
        ("connector.c2", "delivered"): 4,
    }


def test_summary_says_mismatch_when_a_connector_loses_events() -> None:
    config = parse_config(SUMMARY_CONFIG)
    fine = summarize(counters(c1_delivered=7), config)
    assert fine["balanced"] and [r["balanced"] for r in fine["connectors"]] == [True, True]
    assert "MISMATCH" not in format_summary(fine)

    lost = summarize(counters(c1_delivered=6), config)  # 10 in, 6 + 2 + 1 settled
    assert [r["balanced"] for r in lost["connectors"]] == [False, True]
    assert lost["input"]["balanced"] is True and lost["balanced"] is False
    text = format_summary(lost)
    (c1_line,) = [line for line in text.splitlines() if line.startswith("c1 ")]
    assert c1_line.endswith("MISMATCH: in != delivered + retrying + dead-lettered + dropped")
    assert text.splitlines()[-1].endswith(
        "conservation (in = delivered + retrying + dead-lettered + dropped): MISMATCH"
    )


def test_summary_says_mismatch_when_input_lines_do_not_add_up() -> None:
    config = parse_config(SUMMARY_CONFIG)
    short = summarize(counters(c1_delivered=7, lines_read=13), config)  # a line unaccounted
    assert short["input"]["balanced"] is False and short["balanced"] is False
    assert all(r["balanced"] for r in short["connectors"])
    text = format_summary(short)
    assert text.splitlines()[0].endswith("MISMATCH")
    assert text.splitlines()[-1].endswith(": MISMATCH")


def _count(delivered: int) -> Any:
    def bump(_: Any) -> None:
        Metrics.counter("connector.c1", "routed").inc(3)
        Metrics.counter("connector.c1", "delivered").inc(delivered)

    return bump


@pytest.mark.parametrize(("delivered", "exit_code"), [(3, 0), (2, 1)])
def test_exit_code_is_1_when_the_counts_do_not_add_up(
    delivered: int, exit_code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real (tiny) Beam run whose counters say c1 got 3 events and settled ``delivered``."""
    config = parse_config(
        "connectors: [{id: c1, type: file, deliver: {path: /nowhere}}]\n"
        "dead_letter: {path: /nowhere/dead}\n"
    )
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = pipeline | beam.Create([0]) | beam.Map(_count(delivered))
    summary_json = tmp_path / "summary.json"
    assert _finish(pipeline, config, str(summary_json)) == exit_code
    written = json.loads(summary_json.read_text())
    assert written["balanced"] is (exit_code == 0)
    assert ("MISMATCH" in capsys.readouterr().out) is (exit_code == 1)


# -- the default delayed-retry schedule -------------------------------------------------------

# README: "default 5, 10, 15, 20, 30 and 40 minutes: 6 more attempts over 2 hours".
DEFAULT_SCHEDULE_S = [300, 600, 900, 1200, 1800, 2400]


class _Down(Sink):
    """A destination that is down: every write fails with a retryable 503."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, batch: DeliveryBatch) -> WriteResult:
        self.writes += 1
        raise DeliveryError("503 Service Unavailable", True, 503)


def test_a_config_without_retry_walks_the_documented_default_schedule() -> None:
    config = parse_config(
        "connectors: [{id: c1, type: file, deliver: {path: /nowhere}}]\n"
        "dead_letter: {path: /nowhere/dead}\nretry_topic: /nowhere/retry\n"
    )
    retry = config.connectors[0].retry
    assert retry.delayed_schedule_s == DEFAULT_SCHEDULE_S and retry.immediate == 3

    event = {"event_id": "e1", "event": {"type": "heartbeat"}}
    batch = DeliveryBatch("c1", "", [Packaged("e1", 0, "heartbeat", event, event)])
    sink = _Down()
    no_sleep = RetryPolicy(immediate=retry.immediate, sleep=lambda s: None)
    outcome = deliver_with_retries(sink, batch, no_sleep)
    now = 1_000_000
    record, letters = settle_failures(batch, outcome, retry.delayed_schedule_s, True, now)
    waits_s = []
    while record is not None:
        assert letters == []
        waits_s.append((record.not_before_ms - now) / 1000)
        now = record.not_before_ms
        stored = RetryRecord.from_json_dict(json.loads(json.dumps(record.to_json_dict())))
        again = DeliveryBatch(stored.connector, stored.prefix, stored.items, retry=stored)
        outcome = deliver_with_retries(sink, again, RetryPolicy(immediate=0))
        record, letters = settle_failures(again, outcome, retry.delayed_schedule_s, True, now)
    assert waits_s == DEFAULT_SCHEDULE_S
    assert sink.writes == 10  # README: "10 after the full schedule"
    assert [(d.reason, d.attempts) for d in letters] == [("retries_exhausted", 10)]


# -- atomic local writes ----------------------------------------------------------------------


def test_a_reader_never_sees_part_of_a_local_file(tmp_path: Path) -> None:
    """While one thread rewrites a large file, another reads it as fast as it can: every
    read is a whole version (README: "readers never see half a file")."""
    target = tmp_path / "out" / "batch.ndjson"
    size = 8 * 1024 * 1024
    versions = [bytes([ord("a") + n]) * size for n in range(4)]
    done = threading.Event()
    seen: list[tuple[int, bytes]] = []  # (length, first byte) of every read that found it
    torn: list[tuple[int, bytes, bytes]] = []

    def read() -> None:
        while not done.is_set():
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                continue
            seen.append((len(data), data[:1]))
            if data not in versions:
                torn.append((len(data), data[:1], data[-1:]))

    reader = threading.Thread(target=read)
    reader.start()
    writes = 0
    try:
        while len(seen) < 40:  # until the reader has raced the writer 40 times
            assert writes < 1000, "the reader never found the file"
            write_bytes(str(target), versions[writes % 4])
            writes += 1
    finally:
        done.set()
        reader.join()
    assert not torn, f"{len(torn)} of {len(seen)} reads saw a partial file, e.g. {torn[0]}"
    assert os.listdir(target.parent) == ["batch.ndjson"], "no temporary file left behind"


# -- secrets never reach a retry record -------------------------------------------------------


def test_an_echoed_secret_never_reaches_a_retry_record(
    tmp_path: Path, receivers: dict[str, Receiver], secret_env: dict[str, str]
) -> None:
    receiver = receivers["http"]
    # A careless server: 503 (retryable) with the request's headers quoted in the body.
    receiver.reject_when(lambda items: True, status=503, echo_headers=True)
    config = f"""
connectors:
  - id: hook
    type: http
    deliver:
      endpoint: '{receiver.url}{WEBHOOK_PATH}'
      headers: {{Authorization: '${{env:TEST_WEBHOOK_AUTH}}', X-Source: telemetry}}
      body: ndjson
    retry: {{immediate: 0}}
dead_letter: {{path: '{tmp_path}/dead'}}
retry_location: '{tmp_path}/retry'
"""
    code, summary = run(tmp_path, config, [json.dumps(EV_MS), json.dumps(EV_ISO)])
    assert code == 0
    assert summary["connectors"][0]["retrying"] == 2
    requests, _ = receiver.snapshot()
    assert requests and WEBHOOK_AUTH.encode() in requests[0].response, "the server echoed it"

    token = WEBHOOK_AUTH.split()[-1]
    records = [json.loads(p.read_text()) for p in (tmp_path / "retry").rglob("*.json")]
    assert len(records) == 1 and records[0]["last_status"] == 503
    last_error = records[0]["last_error"]
    assert "***" in last_error, f"the echoed body is quoted, redacted: {last_error}"
    assert token not in last_error
    for path in (tmp_path / "retry").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in (tmp_path / "summary.json").read_text()


def test_streaming_duplicates_are_dropped_before_any_connector_takes_them_in() -> None:
    config = parse_config(SUMMARY_CONFIG)
    # Copies are dropped before Route: they are reported, and settle nothing per connector.
    dropped = {**counters(c1_delivered=7), ("telemetry", "duplicates"): 3}
    summary = summarize(dropped, config)
    assert summary["input"]["duplicates"] == 3
    assert summary["balanced"] is True
    assert "copies dropped (event_id seen within the dedup window): 3" in format_summary(summary)
    # A connector delivering one event more than it took in is a mismatch, copies or not.
    assert summarize({**dropped, **counters(c1_delivered=8)}, config)["balanced"] is False
