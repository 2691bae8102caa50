"""TestPipeline tests of the composite transforms, one stage at a time and wired together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.pipeline import build_delivery
from beam_pipeline.summary import collect_summary
from tests.conftest import make_event
from transforms.config import parse_config
from transforms.filter import FilterFields
from transforms.package import PackageRecords
from transforms.parse import ParseEvents
from transforms.route import RouteEvents
from transforms.rules.records import record_of


def config_text(out: Path) -> str:
    return f"""
connectors:
  - id: us_only
    type: file
    route: {{when: [{{field: metadata.geo.country_code, op: eq, value: US}}]}}
    filter: {{metadata: {{allow: [geo]}}, fluxdata: {{allow: []}}}}
    package: {{rename: {{event.type: type}}}}
    deliver: {{path: "{out}/us", format: ndjson, batch: {{max_events: 2}}}}
  - id: errors
    type: file
    route: {{events: [error]}}
    deliver: {{path: "{out}/errors", prefix: "{{hour}}/", format: ndjson}}
dead_letter: {{path: "{out}/dl"}}
"""


def events() -> list[dict[str, Any]]:
    return [
        make_event("a", "heartbeat", metadata={"geo": {"country_code": "US"}, "user": {"id": 1}}),
        make_event("b", "error", metadata={"geo": {"country_code": "FR"}}),
        make_event("c", "error", metadata={"geo": {"country_code": "US"}}),
        make_event("d", "error", ts=None, metadata={"geo": {"country_code": "DE"}}),
        make_event("e", "seek", metadata={"geo": {"country_code": "JP"}}),
    ]


def test_parse_route_filter_package(tmp_path: Path) -> None:
    config = parse_config(config_text(tmp_path))
    lines = [orjson.dumps(e) for e in events()] + [b"", b"{bad", b"[]"]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        parsed = p | beam.Create([("f", 0, lines)]) | ParseEvents()
        assert_that(
            parsed.dead_letter | beam.FlatMap(lambda ds: [d.reason for d in ds]),
            equal_to(["bad_json", "not_an_object"]),
            label="ParseDeadLetters",
        )
        routed = parsed.events | RouteEvents(config)
        assert_that(
            routed
            | "RouteIds" >> beam.Map(lambda kv: (kv[0], sorted(e["event_id"] for e in kv[1]))),
            equal_to([("us_only", ["a", "c"]), ("errors", ["b", "c", "d"])]),
            label="Routed",
        )
        packaged = routed | FilterFields(config) | PackageRecords(config)
        records = packaged.records | beam.FlatMap(
            lambda kv: [
                (kv[0], orjson.dumps(record_of(i), option=orjson.OPT_SORT_KEYS)) for i in kv[1]
            ]
        )
        a = make_event("a", "heartbeat")
        expected_a = {
            "event_id": "a",
            "session_id": "s1",
            "event": {"timestamp": a["event"]["timestamp"]},
            "type": "heartbeat",
            "metadata": {"geo": {"country_code": "US"}},
            "fluxdata": {},
        }
        assert_that(
            records | beam.Filter(lambda kv: kv[0] == "us_only" and b'"a"' in kv[1]),
            equal_to([("us_only", orjson.dumps(expected_a, option=orjson.OPT_SORT_KEYS))]),
            label="PackagedA",
        )


def test_whole_graph_counts_add_up(tmp_path: Path) -> None:
    config = parse_config(config_text(tmp_path))
    lines = [orjson.dumps(e) for e in events()] + [b"  ", b"\xff"]
    p = beam.Pipeline(runner=FnApiRunner())
    build_delivery(p | beam.Create([("f", 0, lines)]), config)
    result = p.run()
    result.wait_until_finish()
    summary = collect_summary(result, config)
    assert summary["input"] == {
        "lines_read": 7,
        "events": 5,
        "invalid": 1,
        "blank_lines": 1,
        "unmatched": 1,
        "duplicates": 0,  # a batch run reads each line once; copies are kept
        "invalid_reasons": {"not_utf8": 1},
        "balanced": True,
    }
    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["us_only"]["routed"] == 2 and rows["us_only"]["delivered"] == 2
    assert rows["us_only"]["writes"] == 1  # max_events 2
    # "d" has no timestamp: the {hour} prefix cannot be rendered -> dead letter, others delivered.
    assert rows["errors"]["routed"] == 3
    assert rows["errors"]["delivered"] == 2 and rows["errors"]["dead_lettered"] == 1
    assert summary["balanced"]
    letters = [
        orjson.loads(line)
        for f in (tmp_path / "dl").rglob("*.ndjson")
        for line in f.read_bytes().splitlines()
    ]
    assert sorted((d["stage"], d["reason"], d["connector"]) for d in letters) == [
        ("batch", "prefix_unrenderable", "errors"),
        ("parse", "not_utf8", None),
    ]
    batch_letter = next(d for d in letters if d["stage"] == "batch")
    assert batch_letter["event"]["event_id"] == "d" and "event time" in batch_letter["error"]


def test_metrics_on_a_known_input(tmp_path: Path) -> None:
    import time

    from apache_beam.metrics.metric import MetricsFilter

    from transforms import metrics

    config = parse_config(config_text(tmp_path))
    now = int(time.time() * 1000)
    # Ages in the middle of wide buckets, so the run's own duration (seconds on a loaded
    # CI machine; 1.5 s old events once crossed into the 5 s bucket) cannot move them.
    fresh = [
        make_event(f"f{i}", "error", ts=now - 40_000, metadata={"geo": {"country_code": "US"}})
        for i in range(3)
    ]
    old = make_event(
        "old", "error", ts=now - 2 * 3_600_000, metadata={"geo": {"country_code": "FR"}}
    )
    lines = [orjson.dumps(e) for e in [*fresh, old]]
    p = beam.Pipeline(runner=FnApiRunner())
    build_delivery(p | beam.Create([("f", 0, lines)]), config)
    result = p.run()
    result.wait_until_finish()
    summary = collect_summary(result, config)
    rows = {r["id"]: r for r in summary["connectors"]}
    errors = rows["errors"]["freshness"]
    assert errors["events"] == 4 and errors["unknown"] == 0
    assert errors["p50_ms"] == 60_000 and errors["p99_ms"] == 21_600_000  # 40 s and 2 h old
    assert rows["us_only"]["freshness"]["p99_ms"] == 60_000
    dists = result.metrics().query(MetricsFilter().with_name(metrics.BATCH_SIZE))["distributions"]
    by_ns = {d.key.metric.namespace: d.committed for d in dists}
    assert by_ns["connector.us_only"].max == 2 and by_ns["connector.us_only"].sum == 3
    # errors is partitioned by {hour}: the fresh and the old events are two batches.
    assert by_ns["connector.errors"].count == 2 and by_ns["connector.errors"].sum == 4
