"""The portable Pub/Sub reader (transforms/pubsub_read.py) and how the CLI chooses a reader.

The reader runs here on Beam's FnApiRunner (a portable runner that executes unbounded
splittable DoFns and calls bundle finalizers) against Google's emulator; the Flink run is
in tests/test_flink.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_pipeline.cli import _pubsub_reading
from beam_pipeline.options import DeliveryOptions
from tests.standins.pubsub import PubSubEmulator
from transforms.pubsub_read import PubSubReading, ReadPubSubPortable

pytest_plugins = ["tests.standins.pubsub"]

N = 30
ACK_DEADLINE_S = 10  # the shortest Pub/Sub allows


def append_to(text: str, path: Path) -> None:
    # The output is unbounded (file sinks refuse it); FnApiRunner runs in this process.
    with path.open("a") as fh:
        fh.write(text + "\n")


def read_all(subscription: str, ack: str, out: Path, stop_in_s: float = 6) -> list[str]:
    """Run the reader until ``stop_in_s`` from now; return "data|attrs|timestamp" lines."""

    def line(message: Any, ts: Any = beam.DoFn.TimestampParam) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in sorted(message.attributes.items()))
        return f"{message.data.decode()}|{attrs}|{ts.micros // 1000}"

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | ReadPubSubPortable(subscription, ack, stop_at=time.time() + stop_in_s)
            | beam.Map(line)
            | beam.Map(append_to, out / "got.txt")
        )
    return sorted((out / "got.txt").read_text().splitlines())


@pytest.mark.parametrize("ack", ["finalize", "immediate"])
def test_reads_data_attributes_and_publish_time_then_acks(
    tmp_path: Path, pubsub_env: PubSubEmulator, ack: str
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    topic = pubsub_env.create_topic("events")
    subscription = pubsub_env.create_subscription(topic, ack_deadline_s=ACK_DEADLINE_S)
    publisher = pubsub_v1.PublisherClient()
    before_ms = int(time.time() * 1000) - 1000
    for i in range(N):
        publisher.publish(topic, f"m{i:02d}".encode(), tenant=f"t{i % 3}").result(timeout=30)
    after_ms = int(time.time() * 1000) + 1000

    started = time.monotonic()
    got = read_all(subscription, ack, tmp_path)
    assert [g.split("|")[:2] for g in got] == [[f"m{i:02d}", f"tenant=t{i % 3}"] for i in range(N)]
    assert all(before_ms <= int(g.split("|")[2]) <= after_ms for g in got), "publish time"
    # Acked: once the ack deadline of the reader's pulls has passed, an unacked message
    # would be delivered again; none is.
    time.sleep(max(0.0, started + ACK_DEADLINE_S + 1 - time.monotonic()))
    assert pubsub_env.pull(subscription, expected=0, timeout=2) == []


def test_timestamp_attribute_sets_event_time(tmp_path: Path, pubsub_env: PubSubEmulator) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    topic = pubsub_env.create_topic("events")
    subscription = pubsub_env.create_subscription(topic)
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topic, b"a", ts="1764136800123").result(timeout=30)
    publisher.publish(topic, b"b", ts="2025-11-26T06:00:00.5Z").result(timeout=30)

    def stamp(message: Any, ts: Any = beam.DoFn.TimestampParam) -> str:
        return f"{message.data.decode()}={ts.micros // 1000}"

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | ReadPubSubPortable(
                subscription, "immediate", stop_at=time.time() + 5, timestamp_attribute="ts"
            )
            | beam.Map(stamp)
            | beam.Map(append_to, tmp_path / "got.txt")
        )
    got = sorted((tmp_path / "got.txt").read_text().splitlines())
    assert got == ["a=1764136800123", "b=1764136800500"]


def options(*argv: str) -> tuple[Any, Any]:
    opts = PipelineOptions(list(argv))
    return opts, opts.view_as(DeliveryOptions)


def test_the_cli_picks_the_reader_by_runner_and_the_ack_by_checkpointing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _pubsub_reading(*options()) == PubSubReading(portable=False, ack="immediate")
    flink = _pubsub_reading(*options("--runner=FlinkRunner"))
    assert (flink.portable, flink.ack) == (True, "immediate")
    assert "crash can lose" in capsys.readouterr().err
    checkpointed = _pubsub_reading(
        *options("--runner=FlinkRunner", "--checkpointing_interval=10000")
    )
    assert (checkpointed.portable, checkpointed.ack) == (True, "finalize")
    forced = _pubsub_reading(*options("--pubsub-reader=portable", "--run-for-s=30"))
    assert forced.portable and forced.stop_at is not None
    assert forced.stop_at - time.time() == pytest.approx(30, abs=5)
    beam_reader = _pubsub_reading(*options("--runner=FlinkRunner", "--pubsub-reader=beam"))
    assert not beam_reader.portable


def test_a_topic_needs_beams_reader() -> None:
    with pytest.raises(ValueError, match="needs a subscription"):
        PubSubReading(portable=True).read(None, topic="projects/p/topics/t")
