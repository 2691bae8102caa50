"""Streaming end to end: Google's Pub/Sub emulator -> the job on the DirectRunner -> files.

Publishes generated events (and a few invalid messages) to a real emulator topic, runs the
streaming graph for as long as it takes every connector to receive exactly its events
(bounded), then cancels the job cleanly.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

from beam_pipeline.pipeline import build_streaming_pipeline
from examples.generate_events import generate
from tests.standins.pubsub import PubSubEmulator
from transforms.config import parse_config

pytest_plugins = ["tests.standins.pubsub"]

N_EVENTS = 150


def config(out: Path) -> Any:
    return parse_config(
        f"""
connectors:
  - id: realtime
    type: file
    route: {{events: [heartbeat, error]}}
    filter: {{metadata: {{allow: [device]}}}}
    deliver: {{path: "{out}/realtime", format: ndjson, batch: {{max_events: 50, max_wait_s: 0.5}}}}
  - id: archive
    type: file
    deliver: {{path: "{out}/archive", prefix: "{{hour}}/", format: ndjson.gz,
               batch: {{max_events: 1000, max_wait_s: 2}}}}
dead_letter: {{path: "{out}/dead_letter", batch: {{max_wait_s: 1}}}}
"""
    )


def read_ids(folder: Path) -> list[str]:
    import gzip

    ids = []
    for path in folder.rglob("*"):
        if path.name.endswith(".ndjson.gz"):
            data = gzip.decompress(path.read_bytes())
        elif path.name.endswith(".ndjson"):
            data = path.read_bytes()
        else:
            continue
        ids.extend(json.loads(line)["event_id"] for line in data.splitlines() if line)
    return ids


def dead_letter_reasons(folder: Path) -> list[str]:
    return [
        json.loads(line)["reason"]
        for path in folder.rglob("*.ndjson")
        for line in path.read_bytes().splitlines()
    ]


class Ticker:
    """Publishes a blank message (skipped, counted as blank) every ``period`` seconds.

    The DirectRunner fires processing-time timers only when a bundle completes, and an
    idle Pub/Sub pull blocks for 30 s; ticks keep the pulls returning so buffered batches
    flush at their ``max_wait_s`` as they would on Flink or Dataflow (docs/beam-limits.md).
    """

    def __init__(self, publisher: Any, topic: str, period: float = 0.3):
        self.publisher, self.topic, self.period = publisher, topic, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self.publisher.publish(self.topic, b" ").result(timeout=30)

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def stop_streaming_job(result: Any, publisher: Any, topic: str) -> None:
    """Cancel the job; a blank wake-up message ends the DirectRunner's blocking 30 s pull."""
    stopper = threading.Thread(target=result.cancel)
    stopper.start()
    while stopper.is_alive():
        publisher.publish(topic, b" ").result(timeout=30)  # a blank line: skipped, counted
        stopper.join(timeout=1)


def test_pubsub_to_connectors(tmp_path: Path, pubsub_env: PubSubEmulator) -> None:
    topic = pubsub_env.create_topic("events")
    subscription = pubsub_env.create_subscription(topic)
    lines = list(generate(N_EVENTS, seed=11))
    events = [json.loads(x) for x in lines]
    want_realtime = sorted(
        e["event_id"] for e in events if e["event"]["type"] in ("heartbeat", "error")
    )
    want_archive = sorted(e["event_id"] for e in events)

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(pipeline, config(tmp_path), subscription=subscription)
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST points at the emulator
    result = pipeline.run()
    try:
        futures = [publisher.publish(topic, line, source="test") for line in lines]
        futures += [publisher.publish(topic, b"{not json"), publisher.publish(topic, b"[1]")]
        for f in futures:
            f.result(timeout=30)
        deadline = time.monotonic() + 120
        with Ticker(publisher, topic):
            while time.monotonic() < deadline:
                done = (
                    len(read_ids(tmp_path / "realtime")) >= len(want_realtime)
                    and len(read_ids(tmp_path / "archive")) >= len(want_archive)
                    and len(dead_letter_reasons(tmp_path / "dead_letter")) >= 2
                )
                if done:
                    break
                time.sleep(0.2)
    finally:
        stop_streaming_job(result, publisher, topic)
    assert sorted(read_ids(tmp_path / "realtime")) == want_realtime
    assert sorted(read_ids(tmp_path / "archive")) == want_archive
    assert sorted(dead_letter_reasons(tmp_path / "dead_letter")) == ["bad_json", "not_an_object"]
    # Filtering applied in streaming too; attributes are kept on the event.
    sample = next((tmp_path / "realtime").rglob("*.ndjson")).read_bytes().splitlines()[0]
    record = json.loads(sample)
    assert set(record["metadata"]) <= {"device"}
    assert record["attributes"] == {"source": "test"}
