"""One record walked through every attempt to the dead letter, on a fake clock.

The streaming job's retry loop is: Deliver (first try + ``retry.immediate`` retries) ->
retry record published to the Pub/Sub retry topic -> read back, held in state until its
``not_before`` (processing-time timer) -> one more attempt -> ... -> dead letter after the
last step of ``retry.delayed_schedule_s``. A Beam graph has no cycles, so Pub/Sub closes
the loop; here the test closes it: each step is one TestStream run of the real streaming
graph (``build_delivery(streaming=Streaming(...))``) whose retry input is the message the previous
step published to the retry topic on Google's emulator. The TestStream's processing time
is the fake clock: a step jumps it to its record's ``not_before`` instead of sleeping
through the default schedule (5, 10, 15, 20, 30 and 40 minutes).

Timing checked for every attempt:
- immediate retries: the receiver's arrival times are at least the backoff apart;
- delayed retry k: the hold does not release the record a moment before ``not_before``
  (a run that stops 1 ms early makes no request, and gives the record back to the retry
  topic unchanged as its input ends), releases it at ``not_before`` (a run that reaches
  it makes exactly one), and the next record is due ``schedule[k]`` after that attempt.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream

from beam_pipeline.pipeline import Streaming, build_delivery
from tests.conftest import make_event
from tests.receivers.base import Receiver
from tests.receivers.credentials import make_api, webhook_connector
from tests.standins.pubsub import PubSubEmulator
from transforms.config import DeliveryConfig, parse_config

pytest_plugins = ["tests.standins.pubsub", "tests.receivers.fixtures"]

SCHEDULE_S = [300, 600, 900, 1200, 1800, 2400]
"""The default delayed schedule (two hours in all), spelled out so the test says it."""

IMMEDIATE = 3
BACKOFF_FLOOR_S = [0.1, 0.2, 0.4]
"""The least wait before immediate retry 1, 2, 3 (half of each jittered backoff cap)."""


def fake_clock() -> float:
    return 0.0


def config(tmp: Path, receiver: Receiver, topic: str, subscription: str) -> DeliveryConfig:
    hook = webhook_connector(
        receiver.url,
        "{max_events: 1, max_wait_s: 1}",
        "timeouts: {connect_s: 2, read_s: 2}",
        retry=f"{{immediate: {IMMEDIATE}, delayed_schedule_s: {SCHEDULE_S}}}",
    )
    return parse_config(
        f"""
connectors:
{hook}
dead_letter: {{path: "{tmp}/dead_letter", batch: {{max_events: 1, max_wait_s: 1}}}}
retry_location: {topic}
retry_subscription: {subscription}
"""
    )


def run_step(cfg: DeliveryConfig, fresh: list[Any], retry: bytes | None, until_s: float) -> None:
    """Run the streaming graph once on TestStreams, moving processing time to ``until_s``.

    ``fresh``: event chunks entering at time 0; ``retry``: one retry-topic message.
    """
    # One TestStream with two tagged outputs: the DirectRunner mixes up the outputs of
    # two TestStreams in one pipeline.
    stream = TestStream(output_tags={"events", "retries"})
    if fresh:
        stream = stream.add_elements(fresh, tag="events")
    if retry is not None:
        stream = stream.add_elements([retry], tag="retries")
    stream = stream.advance_processing_time(until_s).advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        inputs = p | "Input" >> stream
        build_delivery(
            inputs["events"],
            cfg,
            Streaming(clock=fake_clock, retry_messages=inputs["retries"]),
        )


def requests_to(receiver: Receiver) -> list[float]:
    return [r.started for r in receiver.snapshot()[0]]


def test_one_record_through_all_attempts_to_the_dead_letter(
    tmp_path: Path,
    pubsub_env: PubSubEmulator,
    start_receiver: Any,
    secret_env: dict[str, str],
) -> None:
    receiver = start_receiver(make_api("http"))
    receiver.fail(times=None, status=503)  # a destination that never recovers
    topic = pubsub_env.create_topic("retries")
    subscription = pubsub_env.create_subscription(topic)
    cfg = config(tmp_path, receiver, topic, subscription)
    event = make_event(event_id="walker")

    # Attempts 1-4: the first try and the immediate retries, within the first step.
    run_step(cfg, [("t", 0, [orjson.dumps(event)])], None, until_s=2)
    sent = requests_to(receiver)
    assert len(sent) == 1 + IMMEDIATE
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(gap >= floor for gap, floor in zip(gaps, BACKOFF_FLOOR_S, strict=True)), gaps
    # (How long the backoffs may be is the policy's property: tests/test_hostile_delivery.py.)

    message = pubsub_env.pull(subscription, expected=1)[0]
    pulled_at = time.time()
    for step, wait_s in enumerate(SCHEDULE_S):
        data = message.data
        record = json.loads(data)
        attempts_before = 1 + IMMEDIATE + step
        assert (record["attempts"], record["delayed_attempts"]) == (attempts_before, step)
        assert record["last_status"] == 503
        # Due wait_s after the attempt that failed last: the job stamps not_before (in
        # whole ms) after the attempt's response (the receiver stamps its arrival), and
        # before the record could be pulled.
        due_s = record["not_before_ms"] / 1000
        assert sent[-1] - 0.001 <= due_s - wait_s <= pulled_at, (step, due_s - sent[-1])

        # A run that stops 1 ms before the record is due makes no attempt, and gives the
        # record back to the retry topic unchanged when its input ends ...
        run_step(cfg, [], data, until_s=due_s - 0.001)
        assert len(requests_to(receiver)) == len(sent), f"delayed retry {step + 1} too early"
        given_back = pubsub_env.pull(subscription, expected=1)
        assert [json.loads(m.data) for m in given_back] == [record]
        # ... and one that reaches the due time makes exactly one.
        run_step(cfg, [], data, until_s=due_s)
        sent = requests_to(receiver)
        assert len(sent) == attempts_before + 1, f"delayed retry {step + 1} not made on time"
        if step < len(SCHEDULE_S) - 1:
            message = pubsub_env.pull(subscription, expected=1)[0]
            pulled_at = time.time()

    # The sixth delayed attempt was the last: a dead letter, and nothing more to retry.
    assert len(sent) == 1 + IMMEDIATE + len(SCHEDULE_S) == 10
    deadline = time.monotonic() + 30
    files: list[Path] = []
    while not files and time.monotonic() < deadline:
        files = list((tmp_path / "dead_letter").rglob("*.ndjson"))
        time.sleep(0.1)
    letters = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["connector"], letter["stage"], letter["reason"]) == (
        "hook",
        "deliver",
        "retries_exhausted",
    )
    assert (letter["status"], letter["attempts"]) == (503, 10)
    assert letter["event"] == event, "the original event, unwrapped"
    assert pubsub_env.pull(subscription, expected=0, timeout=2) == []
