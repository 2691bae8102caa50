"""Throughput with and without a destination that fails 30% of its requests (issue 5).

    python bench/failure_throughput.py [--events 30000] [--rate 0.3] [--repeat 3]

Runs the job (in-process FnApiRunner, ``python -m beam_pipeline run``) on a generated
file against the webhook stand-in receiver (tests/receivers), once healthy and once
answering a random ``rate`` of requests with 503, with the default 3 immediate retries
and a retry location; prints events/s of both and checks conservation (every event
delivered or waiting in the retry location).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def flaky(rng: random.Random, rate: float) -> Callable[[list[Any]], bool]:
    """A request matcher that picks about ``rate`` of the requests, reproducibly."""

    def pick(items: list[Any]) -> bool:
        return rng.random() < rate

    return pick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from beam_pipeline.cli import main as cli
    from examples.generate_events import generate
    from tests.receivers.base import Receiver
    from tests.receivers.credentials import SECRET_ENV, make_api, webhook_connector

    os.environ.update(SECRET_ENV)
    work = Path(tempfile.mkdtemp(prefix="failbench-"))
    source = work / "events.jsonl"
    source.write_bytes(b"\n".join(generate(args.events, seed=9)) + b"\n")
    results: dict[str, list[float]] = {"healthy": [], f"{args.rate:.0%} 503": []}
    for n in range(args.repeat):
        for label in results:
            receiver = Receiver(make_api("http"))
            if label != "healthy":
                receiver.reject_when(flaky(random.Random(n), args.rate), status=503)
            out = work / f"run-{n}-{label.split()[0]}"
            cfg = out / "delivery.yaml"
            out.mkdir()
            hook = webhook_connector(receiver.url, "{max_events: 500}")
            cfg.write_text(
                f"""
connectors:
{hook}
dead_letter: {{path: "{out}/dead_letter"}}
retry_topic: "{out}/retry"
"""
            )
            summary = out / "summary.json"
            started = time.monotonic()
            code = cli(["run", "--config", str(cfg), "--input", str(source), "--no-progress",
                        "--summary-json", str(summary)])  # fmt: skip
            elapsed = time.monotonic() - started
            receiver.stop()
            row = json.loads(summary.read_text())["connectors"][0]
            assert code == 0 and row["balanced"], row
            results[label].append(args.events / elapsed)
            print(
                f"{label:>9}: {args.events / elapsed:8,.0f} events/s  delivered {row['delivered']}"
                f"  retrying {row['retrying']}  immediate retries {row['retried_immediate']}",
                flush=True,
            )
    base = statistics.median(results["healthy"])
    for label, values in results.items():
        median = statistics.median(values)
        print(f"median {label:>9}: {median:8,.0f} events/s ({median / base:.2f}x healthy)")


if __name__ == "__main__":
    main()
