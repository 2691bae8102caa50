"""TestStream tests of the streaming Batch stage (GroupIntoBatches with a fake clock).

DirectRunner streaming with TestStream; ``clock`` is a fake clock at 0, as GroupIntoBatches
otherwise sets its buffering timer from the wall clock, which the TestStream's
processing time (starting at 0) never reaches before the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from beam_pipeline.pipeline import Streaming, build_delivery
from tests.conftest import make_event
from transforms.config import parse_config


def fake_clock() -> float:
    return 0.0


def config(out: Path) -> Any:
    return parse_config(
        f"""
connectors:
  - id: fast
    type: file
    deliver: {{path: "{out}/fast", format: ndjson, batch: {{max_events: 3, max_wait_s: 5}}}}
  - id: slow
    type: file
    route: {{events: [error]}}
    deliver: {{path: "{out}/slow", format: ndjson, batch: {{max_events: 1000, max_wait_s: 30}}}}
dead_letter: {{path: "{out}/dl"}}
"""
    )


def chunk(*ids: str, etype: str = "heartbeat") -> tuple[str, int, list[bytes]]:
    return ("t", 0, [orjson.dumps(make_event(event_id=i, etype=etype)) for i in ids])


def streaming_pipeline() -> BeamTestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return BeamTestPipeline(runner=BundleBasedDirectRunner(), options=options)


def sizes(written: Any, connector: str) -> Any:
    return (
        written
        | f"Only{connector}" >> beam.Filter(lambda d, c=connector: d.connector_id == c)
        | f"Size{connector}" >> beam.Map(lambda d: d.events)
    )


def test_size_and_time_triggered_flushes(tmp_path: Path) -> None:
    stream = (
        TestStream()
        .add_elements([chunk("a1", "a2", "a3", "a4", "a5", "a6", "a7")])
        # Quiet: no input for longer than max_wait_s (5 s): the 7th event is flushed alone.
        .advance_processing_time(6)
        .add_elements([chunk("b1", "b2")])
        .advance_processing_time(6)
        .add_elements([chunk("e1", etype="error")])
        # The slow connector waits up to 30 s; a quiet stream is flushed by its timer.
        .advance_processing_time(31)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = build_delivery(p | stream, config(tmp_path), Streaming(clock=fake_clock))
        # Size-triggered: two full batches of 3; time-triggered: 1, then 2 (not 3+3+3).
        assert_that(sizes(out["written"], "fast"), equal_to([3, 3, 1, 2, 1]), label="FastSizes")
        assert_that(sizes(out["written"], "slow"), equal_to([1]), label="SlowSizes")
    files = sorted((tmp_path / "fast").rglob("*.ndjson"))
    lines = [orjson.loads(x)["event_id"] for f in files for x in f.read_bytes().splitlines()]
    assert sorted(lines) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "b1", "b2", "e1"]


def test_late_data_is_delivered_not_dropped(tmp_path: Path) -> None:
    late = ("t", 0, [orjson.dumps(make_event(event_id="late", ts=1000))])
    stream = (
        TestStream()
        .advance_watermark_to(10_000)
        .add_elements([chunk("on_time")])
        # An element far behind the watermark: the global window never drops it.
        .add_elements([TimestampedValue(late, 1)])
        .advance_processing_time(10)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = build_delivery(p | stream, config(tmp_path), Streaming(clock=fake_clock))
        assert_that(
            out["written"] | beam.FlatMap(lambda d: [d.connector_id] * d.events),
            equal_to(["fast", "fast"]),
        )
