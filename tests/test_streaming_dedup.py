"""Pub/Sub redelivery never reaches a destination twice within the dedup window.

The fault is real: a bundle of the job (on Prism, the default engine, with the portable
reader acking in bundle finalizers) stalls past its messages' ack deadline, so Google's
emulator redelivers them while the first copies are still in the job. Another subscriber
takes the expired messages and hands them straight back (a nack); the stalled bundle's
late ack names a stale delivery, which Pub/Sub ignores, and the job reads the messages
again after the stall. (Before the default engine turned Prism's bundle splitting off,
the job's reader kept pulling during the stall and read the copies while the first ones
were still stalled; that is how the split bug of tests/test_prism_stateful_split.py
showed here, as two copies passing dedup in about one full-suite run in four.) Without
deduplication (``dedup_window_s=0``) both copies are delivered, under different batch
names; with it, each ``event_id`` goes on once before Route, the other copies are counted
(``telemetry/duplicates``), each connector delivers each event once, and the summary
balances.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from beam_pipeline.pipeline import Streaming, build_delivery
from beam_pipeline.runners import make_pipeline, use_prism
from beam_pipeline.summary import collect_summary
from examples.generate_events import generate
from tests.standins.pubsub import PubSubEmulator
from transforms.config import DeliveryConfig
from transforms.parse import ReadPubSubChunks
from transforms.pubsub_read import PubSubReading

pytest_plugins = ["tests.standins.pubsub"]

ACK_DEADLINE_S = 10
STALL_S = ACK_DEADLINE_S + 10
EVENTS = 60
STALLED = threading.Event()


def _stall_once(element: Any) -> Any:
    """The injected fault: the first bundle outlives its messages' ack deadline."""
    if not STALLED.is_set():
        STALLED.set()
        time.sleep(STALL_S)
    return element


def _take_back_expired(emulator: PubSubEmulator, subscription: str) -> int:
    """Once the stall has outlived the ack deadline: pull what expired and nack it.

    Returns how many it took."""
    assert STALLED.wait(timeout=120), "the job never started its stalled bundle"
    time.sleep(ACK_DEADLINE_S + 2)  # the fault: let the stalled messages' deadline pass
    subscriber = emulator._client("subscriber")
    reply = subscriber.pull(
        request={"subscription": subscription, "max_messages": 1000}, timeout=30
    )
    ack_ids = [m.ack_id for m in reply.received_messages]
    if ack_ids:
        subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
        )
    return len(ack_ids)


def _ids(folder: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for path in sorted(folder.rglob("*.ndjson"))
        for line in path.read_bytes().splitlines()
    ]


def _config(out: Path) -> DeliveryConfig:
    def files(cid: str, wait: float) -> dict[str, Any]:
        batch = {"max_events": 1000, "max_wait_s": wait}
        deliver = {"path": str(out / cid), "format": "ndjson", "batch": batch}
        return {"id": cid, "type": "file", "deliver": deliver}

    return DeliveryConfig.model_validate(
        {
            "connectors": [files("realtime", 0.5), files("bulk", 30)],
            "dead_letter": {"path": str(out / "dead_letter"), "batch": {"max_wait_s": 1}},
        }
    )


@pytest.mark.parametrize("window_s", [0, 600])
def test_a_redelivered_message_reaches_each_destination_once(
    tmp_path: Path, pubsub_env: PubSubEmulator, window_s: int
) -> None:
    from google.cloud import pubsub_v1

    topic = pubsub_env.create_topic("events")
    subscription = pubsub_env.create_subscription(topic, ack_deadline_s=ACK_DEADLINE_S)
    publisher = pubsub_v1.PublisherClient()
    lines = list(generate(EVENTS, seed=3))
    for line in lines:
        publisher.publish(topic, line).result(timeout=30)
    published = sorted(json.loads(line)["event_id"] for line in lines)
    out = tmp_path / "out"
    config = _config(out)
    options = PipelineOptions(streaming=True)
    assert use_prism(options) is None  # the default engine, configured as `run` does
    # Read long enough for the stalled bundle's messages to come back, then drain.
    reading = PubSubReading(portable=True, stop_at=time.time() + STALL_S + 25)
    STALLED.clear()
    pipeline = make_pipeline(options)
    chunks = pipeline | "Read" >> ReadPubSubChunks(subscription, reading=reading)
    stalled = chunks | "Stall" >> beam.Map(_stall_once)
    build_delivery(stalled, config, streaming=Streaming(reading=reading, dedup_window_s=window_s))
    taken: list[int] = []
    thief = threading.Thread(
        target=lambda: taken.append(_take_back_expired(pubsub_env, subscription)), daemon=True
    )
    thief.start()
    result = pipeline.run()
    # Bounded: a pending processing-time timer must not keep the drained job running.
    state = result.wait_until_finish(duration=240_000)
    if state != PipelineState.DONE:
        result.cancel()
    assert state == PipelineState.DONE, f"the job did not drain within 240 s: {state}"
    summary = collect_summary(result, config)

    thief.join(timeout=60)
    assert STALLED.is_set()
    # The fault happened: Pub/Sub delivered messages again (more events read than sent).
    assert summary["input"]["events"] > EVENTS, summary["input"]
    assert summary["balanced"], summary
    for row in summary["connectors"]:
        delivered = _ids(out / row["id"])
        assert sorted(set(delivered)) == published, f"{row['id']}: lost events"
        if window_s:
            assert sorted(delivered) == published, f"{row['id']}: duplicates reached it"
            assert row["delivered"] == row["in"] == EVENTS
        else:  # without the window the redelivered copies are delivered again
            assert row["delivered"] > EVENTS, json.dumps(row)
    # Every copy read is either the first (went on) or counted as dropped.
    dropped = summary["input"]["duplicates"]
    assert dropped == (summary["input"]["events"] - EVENTS if window_s else 0), summary["input"]
    if not window_s:
        # The bulk connector's one batch holds both copies. (The real-time one happened to
        # cut the copies into a batch equal to the first, whose content-derived name it
        # rewrote; streaming does not promise that.)
        assert len(_ids(out / "bulk")) > EVENTS
