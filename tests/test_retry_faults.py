"""Nothing lost: retries, delayed retries, dead letters and replay under injected faults.

Every test delivers a generated file to a real HTTP stand-in (the webhook receiver of
tests/receivers) that injects one kind of fault, then checks conservation per connector
(in = delivered + retrying + dead-lettered) and what the receiver really got. Time is
compressed by configuration (`retry.delayed_schedule_s` of milliseconds), never by sleeping.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.receivers.base import Receiver
from tests.receivers.credentials import make_api, webhook_connector

pytest_plugins = ["tests.receivers.fixtures"]

N = 600


@pytest.fixture
def webhook(start_receiver: Any, secret_env: dict[str, str]) -> Receiver:
    return start_receiver(make_api("http"))


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = list(generate(N, seed=21))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, [json.loads(x)["event_id"] for x in lines]


FAST_SCHEDULE_S = [0.001, 0.001, 0.001, 0.001, 0.001, 0.1]
"""The delayed schedule, compressed: records are due at once (the last after 0.1 s)."""


def write_config(
    tmp: Path,
    receiver: Receiver,
    retry_location: bool = True,
    immediate: int = 3,
    max_events: int = 50,
    concurrency: int = 4,
) -> Path:
    retry = f'retry_location: "{tmp}/retry"' if retry_location else ""
    cfg = tmp / "delivery.yaml"
    hook = webhook_connector(
        receiver.url,
        f"{{max_events: {max_events}}}",
        f"concurrency: {concurrency}",
        "timeouts: {connect_s: 1, read_s: 1}",
        retry=f"{{immediate: {immediate}, delayed_schedule_s: {FAST_SCHEDULE_S}}}",
    )
    cfg.write_text(
        f"""
connectors:
{hook}
  - id: archive
    type: file
    deliver: {{path: "{tmp}/archive", format: ndjson}}
dead_letter: {{path: "{tmp}/dead_letter"}}
{retry}
"""
    )
    return cfg


def run(cmd: str, cfg: Path, tmp: Path, *extra: str) -> dict[str, Any]:
    summary = tmp / f"summary-{cmd}.json"
    code = main(
        [cmd, "--config", str(cfg), "--summary-json", str(summary), "--no-progress", *extra]
    )
    data = json.loads(summary.read_text())
    assert code == 0 and data["balanced"], data
    return {r["id"]: r for r in data["connectors"]}


def received_ids(receiver: Receiver) -> list[str]:
    return [r["event_id"] for r in receiver.snapshot()[1]]


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    folder = tmp / "dead_letter"
    return [json.loads(x) for f in folder.rglob("*.ndjson") for x in f.read_text().splitlines()]


def retry_records(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in (tmp / "retry").rglob("*.json")]


def assert_archive_complete(tmp: Path, want: list[str]) -> None:
    ids = [
        json.loads(x)["event_id"]
        for f in (tmp / "archive").rglob("*.ndjson")
        for x in f.read_text().splitlines()
    ]
    assert sorted(ids) == sorted(want), "the healthy connector is not affected"


def test_random_5xx_are_absorbed_by_immediate_retries(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    rng = random.Random(3)
    webhook.reject_when(lambda items: rng.random() < 0.3, status=503)
    rows = run("run", write_config(tmp_path, webhook, immediate=6), tmp_path, "--input", str(path))
    hook = rows["hook"]
    got = received_ids(webhook)
    # Each event is delivered, waiting for a delayed retry, or dead-lettered: never lost.
    waiting = [i["event_id"] for r in retry_records(tmp_path) for i in r["items"]]
    assert sorted(got + waiting) == sorted(want)
    assert hook["delivered"] == len(got) and hook["retrying"] == len(waiting)
    assert hook["retried_immediate"] > 0 and hook["dead_lettered"] == 0
    assert len(set(got)) == len(got), "a 503 means not accepted: no duplicates"
    assert_archive_complete(tmp_path, want)


def test_outage_then_recovery_through_delayed_retries(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    cfg = write_config(tmp_path, webhook)
    webhook.outage()
    rows = run("run", cfg, tmp_path, "--input", str(path))
    assert rows["hook"]["delivered"] == 0 and rows["hook"]["retrying"] == N
    assert rows["hook"]["retried_immediate"] == 3 * (N // 50)
    records = retry_records(tmp_path)
    assert {r["attempts"] for r in records} == {4} and {r["delayed_attempts"] for r in records} == {
        0
    }
    assert all(r["last_status"] is None and "connect" in r["last_error"] for r in records)
    assert_archive_complete(tmp_path, want)

    # Still down: one delayed attempt each, rescheduled.
    rows = run("retry", cfg, tmp_path)
    assert rows["hook"]["in"] == N and rows["hook"]["retrying"] == N
    assert {r["delayed_attempts"] for r in retry_records(tmp_path)} == {1}

    webhook.restore()
    rows = run("retry", cfg, tmp_path)
    assert rows["hook"]["in"] == rows["hook"]["delivered"] == N
    assert retry_records(tmp_path) == []
    assert sorted(received_ids(webhook)) == sorted(want)
    assert dead_letters(tmp_path) == []


def test_a_destination_that_never_recovers_ends_in_dead_letters_after_the_schedule(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    cfg = write_config(tmp_path, webhook)
    webhook.fail(times=None, status=500)
    run("run", cfg, tmp_path, "--input", str(path))
    for attempt in range(1, 7):
        rows = run("retry", cfg, tmp_path)
        assert rows["hook"]["in"] == N
        if attempt < 6:
            assert rows["hook"]["retrying"] == N and rows["hook"]["dead_lettered"] == 0
    assert rows["hook"]["dead_lettered"] == N and retry_records(tmp_path) == []
    letters = dead_letters(tmp_path)
    assert sorted(d["event_id"] for d in letters) == sorted(want)
    assert {(d["reason"], d["status"], d["attempts"], d["stage"]) for d in letters} == {
        ("retries_exhausted", 500, 10, "deliver")
    }
    assert all(d["event"]["event_id"] == d["event_id"] for d in letters)
    # 1 + 3 immediate + 6 delayed attempts per batch reached the receiver.
    assert len(webhook.snapshot()[0]) == 10 * (N // 50)


def test_429_storm_honours_retry_after(tmp_path: Path, webhook: Receiver, source: Any) -> None:
    path, want = source
    webhook.throttle(times=8, retry_after="0")
    rows = run("run", write_config(tmp_path, webhook), tmp_path, "--input", str(path))
    assert rows["hook"]["delivered"] == N and rows["hook"]["retried_immediate"] >= 8
    assert sorted(received_ids(webhook)) == sorted(want)


def test_timeouts_are_retried_and_duplicates_are_bounded(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    webhook.hang(seconds=2, times=2)  # the client gives up after 1 s; the server never answers
    rows = run("run", write_config(tmp_path, webhook), tmp_path, "--input", str(path))
    assert rows["hook"]["delivered"] == N
    got = Counter(received_ids(webhook))
    assert set(got) == set(want)
    # A hung request was dropped unanswered, so nothing was stored twice here; in general
    # at most the events of the timed-out batches could be duplicated, and they are counted.
    assert rows["hook"]["possible_duplicates"] == 2 * 50
    assert sum(got.values()) - N <= rows["hook"]["possible_duplicates"]


def test_400_dead_letters_only_the_rejected_batches(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    webhook.reject_when(lambda items: any(r["event"]["type"] == "error" for r in items), status=400)
    rows = run("run", write_config(tmp_path, webhook), tmp_path, "--input", str(path))
    letters = dead_letters(tmp_path)
    got = received_ids(webhook)
    assert sorted(got + [d["event_id"] for d in letters]) == sorted(want)
    assert letters and {(d["reason"], d["status"], d["attempts"]) for d in letters} == {
        ("not_retryable", 400, 1)
    }
    assert rows["hook"]["dead_lettered"] == len(letters) and rows["hook"]["retrying"] == 0
    assert all("injected rejection" in d["error"] for d in letters)


def test_replay_after_an_outage_delivers_everything_once_unwrapped(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    cfg = write_config(tmp_path, webhook, retry_location=False)
    webhook.outage()
    rows = run("run", cfg, tmp_path, "--input", str(path))
    assert rows["hook"]["dead_lettered"] == N
    webhook.restore()
    letters_dir = tmp_path / "dead_letter"
    replay_dl = tmp_path / "replayed"
    cfg.write_text(cfg.read_text().replace(f'"{letters_dir}"', f'"{replay_dl}"'))
    rows = run("replay", cfg, tmp_path, "--dead-letters", str(letters_dir), "--connector", "hook")
    assert rows["hook"]["replayed"] == rows["hook"]["delivered"] == N
    assert rows["archive"]["in"] == 0
    records = webhook.snapshot()[1]
    assert sorted(r["event_id"] for r in records) == sorted(want)
    assert all("stage" not in r and "original" not in r for r in records), "unwrapped events"

    # Replayed events that fail again are ordinary dead letters of the event.
    webhook.fail(times=None, status=400)
    rows = run("replay", cfg, tmp_path, "--dead-letters", str(letters_dir), "--connector", "hook")
    again = [json.loads(x) for f in replay_dl.rglob("*.ndjson") for x in f.read_text().splitlines()]
    assert len(again) == N and all("stage" not in d["event"] for d in again)
    assert {d["event"]["event_id"] for d in again} == set(want)


def test_a_stalled_connector_spills_to_the_retry_location_and_holds_nobody_back(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    cfg = write_config(tmp_path, webhook, immediate=0, max_events=10, concurrency=1)
    webhook.hang(seconds=30)  # every request hangs past the 1 s read timeout
    rows = run("run", cfg, tmp_path, "--input", str(path))
    hook = rows["hook"]
    # 60 batches, one thread, 16 may wait: the rest were parked without an attempt.
    assert hook["spilled"] > 0 and hook["delivered"] == 0
    assert hook["retrying"] == N and hook["dead_lettered"] == 0
    assert_archive_complete(tmp_path, want)
    records = retry_records(tmp_path)
    assert sum(len(r["items"]) for r in records) == N
    assert any(r["attempts"] == 0 and "not keeping up" in r["last_error"] for r in records)
    webhook.clear_faults()
    rows = run("retry", cfg, tmp_path)
    assert rows["hook"]["delivered"] == N and retry_records(tmp_path) == []
    assert sorted(received_ids(webhook)) == sorted(want)


def test_without_a_retry_location_a_slow_connector_applies_backpressure_and_loses_nothing(
    tmp_path: Path, webhook: Receiver, source: Any
) -> None:
    path, want = source
    cfg = write_config(tmp_path, webhook, retry_location=False, max_events=10, concurrency=1)
    webhook.slow(0.05)  # 60 batches through one thread: the 16-batch backlog fills up
    rows = run("run", cfg, tmp_path, "--input", str(path))
    assert rows["hook"]["delivered"] == N and rows["hook"]["spilled"] == 0
    assert sorted(received_ids(webhook)) == sorted(want)
    assert_archive_complete(tmp_path, want)
