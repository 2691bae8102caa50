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

from beam_pipeline.options import DeliveryOptions
from beam_pipeline.runners import ReadingError, pubsub_reading
from tests.standins.pubsub import PubSubEmulator
from transforms.pubsub_read import PubSubReading, ReadPubSubPortable

pytest_plugins = ["tests.standins.pubsub"]

N = 30
ACK_DEADLINE_S = 10  # the shortest Pub/Sub allows


def append_to(text: str, path: Path) -> None:
    # The output is unbounded (file sinks refuse it); FnApiRunner runs in this process.
    with path.open("a") as fh:
        fh.write(text + "\n")


def read_all(
    subscription: str, ack: str, out: Path, lease_s: int | None = None, stop_in_s: float = 6
) -> list[str]:
    """Run the reader until ``stop_in_s`` from now; return "data|attrs|timestamp" lines."""

    def line(message: Any, ts: Any = beam.DoFn.TimestampParam) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in sorted(message.attributes.items()))
        return f"{message.data.decode()}|{attrs}|{ts.micros // 1000}"

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | ReadPubSubPortable(
                subscription, ack, stop_at=time.time() + stop_in_s, lease_s=lease_s
            )
            | beam.Map(line)
            | beam.Map(append_to, out / "got.txt")
        )
    return sorted((out / "got.txt").read_text().splitlines())


@pytest.mark.parametrize(("ack", "lease_s"), [("finalize", 30), ("immediate", None)])
def test_reads_data_attributes_and_publish_time_then_acks(
    tmp_path: Path, pubsub_env: PubSubEmulator, ack: str, lease_s: int | None
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
    got = read_all(subscription, ack, tmp_path, lease_s)
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
    # Unreadable or out of range: the publish time, never a failed pull.
    before_ms = int(time.time() * 1000) - 1000
    for i, bad in enumerate(["\u00b2", "99999999999999999999", "yesterday"]):
        publisher.publish(topic, f"bad{i}".encode(), ts=bad).result(timeout=30)

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
    got = dict(x.split("=") for x in (tmp_path / "got.txt").read_text().splitlines())
    assert {k: got[k] for k in ("a", "b")} == {"a": "1764136800123", "b": "1764136800500"}
    assert all(before_ms <= int(got[f"bad{i}"]) <= time.time() * 1000 for i in range(3))


def options(*argv: str) -> tuple[Any, Any]:
    opts = PipelineOptions(list(argv))
    return opts, opts.view_as(DeliveryOptions)


def test_the_cli_picks_the_reader_by_runner_and_the_ack_by_checkpointing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not pubsub_reading(*options()).portable  # DirectRunner: Beam's reader
    for runner in ("FlinkRunner", "flink", "PortableRunner"):
        checkpointed = pubsub_reading(
            *options(f"--runner={runner}", "--checkpointing_interval=10000")
        )
        assert (checkpointed.portable, checkpointed.ack) == (True, "finalize"), runner
        assert checkpointed.lease_s == 50, "leased for two checkpoint intervals (+30 s)"
    prism = pubsub_reading(*options("--runner=prism"))
    assert (prism.portable, prism.ack) == (True, "finalize")  # Prism finalizes bundles
    explicit = pubsub_reading(*options("--runner=FlinkRunner", "--pubsub-ack=immediate"))
    assert (explicit.portable, explicit.ack) == (True, "immediate")
    assert "failure can lose" in capsys.readouterr().err
    forced = pubsub_reading(
        *options("--pubsub-reader=portable", "--pubsub-ack=immediate", "--run-for-s=30")
    )
    assert forced.portable and forced.stop_at is not None
    assert forced.stop_at - time.time() == pytest.approx(30, abs=5)
    beam_reader = pubsub_reading(*options("--runner=FlinkRunner", "--pubsub-reader=beam"))
    assert not beam_reader.portable


@pytest.mark.parametrize("ack", ["auto", "finalize"])
def test_flink_without_checkpointing_needs_an_explicit_choice(ack: str) -> None:
    # finalize would never ack on Flink without checkpoints; immediate may lose messages.
    with pytest.raises(ReadingError, match="--checkpointing_interval"):
        pubsub_reading(*options("--runner=FlinkRunner", f"--pubsub-ack={ack}"))


def test_a_topic_needs_beams_reader() -> None:
    with pytest.raises(ValueError, match="needs a subscription"):
        PubSubReading(portable=True).read(None, topic="projects/p/topics/t")
