"""Streaming delayed retries through a Pub/Sub retry topic (Google's emulator), end to end.

The job publishes batches that failed to the retry topic, reads them back from the retry
subscription, holds each in state until its ``not_before`` (processing-time timer), and
redelivers it; exhausted records become dead letters. Time is compressed through
``retry.delayed_schedule_s``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

from beam_pipeline.pipeline import build_streaming_pipeline
from tests.conftest import make_event
from tests.receivers.base import Receiver
from tests.receivers.credentials import make_api, webhook_connector
from tests.standins.pubsub import PubSubEmulator
from tests.test_streaming_pubsub import Ticker, stop_streaming_job
from transforms.config import parse_config

pytest_plugins = ["tests.standins.pubsub", "tests.receivers.fixtures"]

N = 20


def config(tmp: Path, receiver: Receiver, topic: str, subscription: str) -> Any:
    hook = webhook_connector(
        receiver.url,
        "{max_events: 5, max_wait_s: 0.3}",
        "timeouts: {connect_s: 1, read_s: 1}",
        retry="{immediate: 0, delayed_schedule_s: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}",
    )
    return parse_config(
        f"""
connectors:
{hook}
dead_letter: {{path: "{tmp}/dead_letter", batch: {{max_wait_s: 0.5}}}}
retry_location: {topic}
retry_subscription: {subscription}
"""
    )


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    return [
        json.loads(x)
        for f in (tmp / "dead_letter").rglob("*.ndjson")
        for x in f.read_text().splitlines()
    ]


def wait_for(predicate: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("recovers", [True, False])
def test_retry_topic_loop(
    recovers: bool,
    tmp_path: Path,
    pubsub_env: PubSubEmulator,
    start_receiver: Any,
    secret_env: dict[str, str],
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    receiver = start_receiver(make_api("http"))
    events_topic = pubsub_env.create_topic("events")
    events_sub = pubsub_env.create_subscription(events_topic)
    retry_location = pubsub_env.create_topic("retries")
    retry_sub = pubsub_env.create_subscription(retry_location)
    receiver.fail(times=None, status=503)

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(
        pipeline, config(tmp_path, receiver, retry_location, retry_sub), subscription=events_sub
    )
    publisher = pubsub_v1.PublisherClient()
    want = sorted(f"r{i}" for i in range(N))
    result = pipeline.run()
    try:
        with Ticker(publisher, events_topic), Ticker(publisher, retry_location):
            for event_id in want:
                data = json.dumps(make_event(event_id=event_id)).encode()
                publisher.publish(events_topic, data).result(timeout=30)
            # Every batch failed once and went round the retry topic at least once more.
            wait_for(lambda: len(receiver.snapshot()[0]) >= 2 * (N // 5))
            if recovers:
                receiver.clear_faults()
                wait_for(lambda: len(receiver.snapshot()[1]) >= N)
            else:
                wait_for(lambda: len(dead_letters(tmp_path)) >= N)
    finally:
        stop_streaming_job(result, publisher, events_topic)
    got = sorted(r["event_id"] for r in receiver.snapshot()[1])
    if recovers:
        assert got == want, "every event delivered exactly once after the outage"
        assert dead_letters(tmp_path) == []
    else:
        letters = dead_letters(tmp_path)
        assert got == []
        assert sorted(d["event_id"] for d in letters) == want
        # The first attempt plus 6 delayed ones (no immediate retries configured).
        assert {(d["reason"], d["status"], d["attempts"]) for d in letters} == {
            ("retries_exhausted", 503, 7)
        }
        # Every batch (how events group into batches depends on arrival times) was sent
        # exactly 7 times.
        attempts = Counter(
            tuple(sorted(r["event_id"] for r in req.items)) for req in receiver.snapshot()[0]
        )
        assert sorted(i for batch in attempts for i in batch) == want
        assert set(attempts.values()) == {7}


def test_dead_letters_to_a_pubsub_topic(tmp_path: Path, pubsub_env: PubSubEmulator) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    events_topic = pubsub_env.create_topic("events")
    events_sub = pubsub_env.create_subscription(events_topic)
    dl_topic = pubsub_env.create_topic("dead")
    dl_sub = pubsub_env.create_subscription(dl_topic)
    cfg = parse_config(
        f"""
connectors:
  - id: files
    type: file
    deliver: {{path: "{tmp_path}/files", prefix: "{{hour}}/", batch: {{max_wait_s: 0.3}}}}
dead_letter: {{topic: {dl_topic}}}
"""
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(pipeline, cfg, subscription=events_sub)
    publisher = pubsub_v1.PublisherClient()
    result = pipeline.run()
    try:
        with Ticker(publisher, events_topic):
            publisher.publish(events_topic, b"{not json").result(timeout=30)
            no_time = make_event(event_id="no-time", ts=None)
            publisher.publish(events_topic, json.dumps(no_time).encode()).result(timeout=30)
            messages = pubsub_env.pull(dl_sub, expected=2, timeout=60)
    finally:
        stop_streaming_job(result, publisher, events_topic)
    letters = sorted(
        (json.loads(m.message.data if hasattr(m, "message") else m.data) for m in messages),
        key=lambda d: d["stage"],
    )
    assert [(d["stage"], d["reason"], d["connector"]) for d in letters] == [
        ("batch", "prefix_unrenderable", "files"),
        ("parse", "bad_json", None),
    ]
