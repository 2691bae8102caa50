"""The README's streaming command on the default engine (Prism), against Google's emulator.

``run --streaming`` without ``--runner`` runs on Prism with the portable Pub/Sub reader,
acking in bundle finalizers. One run, stopped with SIGTERM while messages keep coming,
proves the promises a user meets first:

* it drains: the bulk connector's open batch (``max_wait_s: 30``) is written at the stop,
  not dropped, and the summary balances;
* nothing is lost or duplicated: every published event is either delivered once to each
  connector or still waiting in the subscription (published after the reader stopped),
  never both, and none is redelivered after its ack deadline (the acks happened);
* no finalizer errors ("Bundle is not in a finalizable state") in the job's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from examples.generate_events import generate
from tests.standins.pubsub import PubSubEmulator

pytest_plugins = ["tests.standins.pubsub"]

REPO = Path(__file__).resolve().parent.parent
ACK_DEADLINE_S = 10


def _ids(folder: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for path in folder.rglob("*.ndjson")
        for line in path.read_bytes().splitlines()
    ]


class Publisher(threading.Thread):
    """Publishes generated events one by one until stopped; remembers their ids."""

    def __init__(self, client: Any, topic: str, lines: list[bytes]):
        super().__init__(daemon=True)
        self.client, self.topic, self.lines = client, topic, lines
        self.published: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for line in self.lines:
            if self.halt.is_set():
                return
            self.client.publish(self.topic, line).result(timeout=30)
            self.published.append(json.loads(line)["event_id"])
            time.sleep(0.01)  # ~100 events/s: a live stream, not a backlog


def _wait_for(condition: Any, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def _realtime(out: Path) -> str:
    """A real-time file connector (batches of 50, 0.5 s), as a connectors list item."""
    return (
        "  - id: realtime\n    type: file\n"
        f'    deliver: {{path: "{out}/realtime", format: ndjson,'
        " batch: {max_events: 50, max_wait_s: 0.5}}"
    )


def _start_job(tmp_path: Path, connectors: str, *source: str) -> tuple[Any, Any]:
    """The README's streaming command as a subprocess, on ``connectors`` (YAML items) and
    ``source`` (``--subscription S`` or ``--topic T``); its output goes to ``job.log``
    (a file, not a pipe: a full pipe would block the job). Returns (process, log file)."""
    out = tmp_path / "out"
    (tmp_path / "delivery.yaml").write_text(
        f"connectors:\n{connectors}\n"
        f'dead_letter: {{path: "{out}/dead_letter", batch: {{max_wait_s: 1}}}}\n'
    )
    log = (tmp_path / "job.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "run",
            "--config",
            str(tmp_path / "delivery.yaml"),
            "--streaming",
            *source,
            "--summary-json",
            str(out / "summary.json"),
        ],
        cwd=REPO,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, log


def _drain_subscription(emulator: PubSubEmulator, subscription: str) -> list[str]:
    """Every message still in the subscription (acked now), by event id."""
    subscriber = emulator._client("subscriber")
    ids: list[str] = []
    while True:
        reply = subscriber.pull(
            request={"subscription": subscription, "max_messages": 1000}, timeout=30
        )
        if not reply.received_messages:
            return ids
        ids.extend(json.loads(m.message.data)["event_id"] for m in reply.received_messages)
        subscriber.acknowledge(
            request={
                "subscription": subscription,
                "ack_ids": [m.ack_id for m in reply.received_messages],
            }
        )


def test_sigterm_drains_the_default_engine_and_loses_nothing(
    tmp_path: Path, pubsub_env: PubSubEmulator
) -> None:
    from google.cloud import pubsub_v1

    emulator = pubsub_env
    topic = emulator.create_topic("events")
    subscription = emulator.create_subscription(topic, ack_deadline_s=ACK_DEADLINE_S)
    out = tmp_path / "out"
    publisher = Publisher(pubsub_v1.PublisherClient(), topic, list(generate(6000, seed=11)))
    publisher.start()
    proc, log = _start_job(
        tmp_path,
        _realtime(out)
        + f"""
  - id: bulk
    type: file
    deliver: {{path: "{out}/bulk", format: ndjson, batch: {{max_events: 1000, max_wait_s: 30}}}}""",
        "--subscription",
        subscription,
    )
    try:
        _wait_for(lambda: len(_ids(out / "realtime")) >= 300, 180, "300 delivered events", proc)
        assert _ids(out / "bulk") == []  # its batch is still open: 30 s, 1,000 events
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        publisher.halt.set()
        publisher.join(timeout=60)
    printed = (tmp_path / "job.log").read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert "SIGTERM: stopping the read and draining" in printed
    assert "finalizable" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balanced"], printed[-3000:]
    # Acked messages never come back: wait out the ack deadline, then take what is left.
    time.sleep(ACK_DEADLINE_S + 2)
    left = _drain_subscription(emulator, subscription)
    published = set(publisher.published)
    for cid in ("realtime", "bulk"):
        delivered = _ids(out / cid)
        assert len(delivered) == len(set(delivered)), f"{cid}: duplicates"
        assert not set(delivered) & set(left), f"{cid}: delivered and still waiting"
        assert set(delivered) | set(left) == published, f"{cid}: lost events"
    assert _ids(out / "realtime") and sorted(_ids(out / "bulk")) == sorted(_ids(out / "realtime"))


def test_topic_reads_through_a_temporary_subscription_deleted_after(
    tmp_path: Path, pubsub_env: PubSubEmulator
) -> None:
    from google.cloud import pubsub_v1

    topic = pubsub_env.create_topic("events")
    publisher = pubsub_v1.PublisherClient()
    out = tmp_path / "out"

    def subscriptions() -> list[str]:
        return list(publisher.list_topic_subscriptions(request={"topic": topic}, timeout=30))

    proc, log = _start_job(
        tmp_path,
        _realtime(out),
        "--topic",
        topic,
    )
    lines = list(generate(40, seed=5))
    try:
        _wait_for(lambda: len(subscriptions()) == 1, 120, "a temporary subscription", proc)
        for line in lines:
            publisher.publish(topic, line).result(timeout=30)
        _wait_for(lambda: len(_ids(out / "realtime")) >= len(lines), 120, "40 events", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    printed = (tmp_path / "job.log").read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert "temporary subscription" in printed
    assert sorted(_ids(out / "realtime")) == sorted(json.loads(x)["event_id"] for x in lines)
    assert subscriptions() == []  # deleted after the run
