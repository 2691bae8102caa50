"""Routing rules that change while the job runs (beam_pipeline.live)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

from beam_pipeline.config import load_config
from beam_pipeline.live import LiveRules
from beam_pipeline.pipeline import build_streaming_pipeline
from tests.conftest import make_event
from tests.standins.pubsub import PubSubEmulator
from tests.test_streaming_pubsub import Ticker, stop_streaming_job

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


def wait_ttl(rules: LiveRules) -> None:
    assert rules.refresh_s is not None
    time.sleep(rules.refresh_s * 1.5)  # the TTL itself is what is being tested


def test_new_rules_apply_after_the_refresh(tmp_path: Path) -> None:
    cfg = tmp_path / "delivery.yaml"
    write_config(cfg, tmp_path, ["heartbeat"])
    rules = LiveRules(load_config(str(cfg)), str(cfg), refresh_s=0.05)
    hb, err = make_event(etype="heartbeat"), make_event(etype="error")
    assert rules.by_id()["ops"].route.matches(hb) and not rules.by_id()["ops"].route.matches(err)
    write_config(cfg, tmp_path, ["error"])
    assert rules.by_id()["ops"].route.matches(hb), "not before the refresh period"
    wait_ttl(rules)
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
    caplog.set_level(logging.WARNING, logger="beam_pipeline.live")

    cfg.write_text("connectors: [{id: ops, type: file, route: {evnts: [x]}}]")
    wait_ttl(rules)
    assert rules.by_id()["ops"].route.matches(hb)
    assert "reload rejected" in caplog.text and "evnts" in caplog.text

    extra = f'  - {{id: more, type: file, deliver: {{path: "{tmp_path}/more"}}}}'
    write_config(cfg, tmp_path, ["error"], extra=extra)
    wait_ttl(rules)
    assert list(rules.by_id()) == ["ops"] and rules.by_id()["ops"].route.matches(hb)
    assert "restart required" in caplog.text

    write_config(cfg, tmp_path, ["error"], max_events=99)
    wait_ttl(rules)
    assert not rules.by_id()["ops"].route.matches(hb), "route change applied"
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
            time.sleep(1.5)  # one refresh period
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
