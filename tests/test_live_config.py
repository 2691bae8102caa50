"""Routing rules that change while the job runs (transforms.live)."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

import transforms.live
from beam_pipeline.pipeline import build_streaming_pipeline
from tests.conftest import make_event
from tests.standins.pubsub import PubSubEmulator
from tests.test_streaming_pubsub import Ticker, stop_streaming_job
from transforms.config import load_config
from transforms.live import LiveRules

pytest_plugins = ["tests.standins.pubsub"]


def write_config(
    path: Path, out: Path, events: list[str], extra: str = "", max_events: int = 10
) -> None:
    path.write_text(
        f"""
connectors:
  - id: ops
    type: file
    route: {{events: {json.dumps(events)}}}
    deliver:
      path: "{out}/ops"
      format: ndjson
      batch: {{max_events: {max_events}, max_wait_s: 0.3}}
{extra}
dead_letter: {{path: "{out}/dl"}}
"""
    )


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Ask ``condition`` (which reads the rules, so it is what triggers a due re-read)
    until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class FakeClock:
    """``time.monotonic`` of transforms.live, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_new_rules_apply_after_the_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(transforms.live, "time", clock)
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path, ["heartbeat"])
    rules = LiveRules(load_config(str(cfg)), str(cfg), refresh_s=60)
    hb, err = make_event(etype="heartbeat"), make_event(etype="error")
    assert rules.by_id()["ops"].route.matches(hb) and not rules.by_id()["ops"].route.matches(err)
    write_config(cfg, tmp_path, ["error"])
    clock.now += 59.999
    assert rules.by_id()["ops"].route.matches(hb), "not before the refresh period"
    assert rules.version == 0
    clock.now += 0.001  # the TTL itself is what is being tested
    assert rules.by_id()["ops"].route.matches(err) and not rules.by_id()["ops"].route.matches(hb)
    assert rules.version == 1


def test_invalid_or_reshaped_configs_are_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path, ["heartbeat"])
    rules = LiveRules(load_config(str(cfg)), str(cfg), refresh_s=0.05)
    hb = make_event(etype="heartbeat")
    rules.connectors()
    caplog.set_level(logging.WARNING, logger="transforms.live")

    def logged(text: str) -> bool:
        rules.connectors()  # asking for the rules is what re-reads a due config
        return text in caplog.text

    cfg.write_text("connectors: [{id: ops, type: file, route: {evnts: [x]}}]")
    until(lambda: logged("reload rejected"))
    assert rules.by_id()["ops"].route.matches(hb)
    assert "evnts" in caplog.text

    extra = f'  - {{id: more, type: file, deliver: {{path: "{tmp_path}/more"}}}}'
    write_config(cfg, tmp_path, ["error"], extra=extra)
    until(lambda: logged("restart required"))
    assert list(rules.by_id()) == ["ops"] and rules.by_id()["ops"].route.matches(hb)

    write_config(cfg, tmp_path, ["error"], max_events=99)
    until(lambda: not rules.by_id()["ops"].route.matches(hb))  # the route change applied
    assert rules.by_id()["ops"].deliver.batch.max_events == 10, "deliver change needs a restart"
    assert "need a restart" in caplog.text


def read_ids(folder: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for f in folder.rglob("*.ndjson")
        for line in f.read_bytes().splitlines()
    ]


def wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_streaming_job_follows_a_changed_config(tmp_path: Path, pubsub_env: PubSubEmulator) -> None:
    from google.cloud import pubsub_v1

    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path, ["heartbeat"])
    topic = pubsub_env.create_topic("live")
    subscription = pubsub_env.create_subscription(topic)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(
        pipeline, load_config(str(cfg)), subscription, config_source=str(cfg), config_refresh_s=1.0
    )
    publisher = pubsub_v1.PublisherClient()

    def publish(prefix: str) -> None:
        for i, etype in enumerate(["heartbeat", "error"] * 5):
            data = json.dumps(make_event(event_id=f"{prefix}{i}", etype=etype)).encode()
            publisher.publish(topic, data).result(timeout=30)

    result = pipeline.run()
    try:
        with Ticker(publisher, topic):
            publish("before")
            wait_for(lambda: len(read_ids(tmp_path / "ops")) >= 5)
            write_config(cfg, tmp_path, ["error"])
            probes = itertools.count()

            def new_rules_in_force() -> bool:
                # An error event is delivered only once the job routes by the new config.
                probe = make_event(event_id=f"probe{next(probes)}", etype="error")
                publisher.publish(topic, json.dumps(probe).encode()).result(timeout=30)
                return any(i.startswith("probe") for i in read_ids(tmp_path / "ops"))

            wait_for(new_rules_in_force)
            publish("after")
            wait_for(
                lambda: len([i for i in read_ids(tmp_path / "ops") if i.startswith("after")]) >= 5
            )
    finally:
        stop_streaming_job(result, publisher, topic)
    ids = read_ids(tmp_path / "ops")
    assert sorted(i for i in ids if i.startswith("before")) == [
        f"before{i}" for i in (0, 2, 4, 6, 8)
    ]
    assert sorted(i for i in ids if i.startswith("after")) == [f"after{i}" for i in (1, 3, 5, 7, 9)]
