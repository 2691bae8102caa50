"""Streaming latency: publish to Pub/Sub at a steady rate, measure publish-to-delivery time.

    python bench/streaming_latency.py [--rate 200] [--seconds 60] [--runner-wait 20]
    python bench/streaming_latency.py --runner flink [--rate 200] [--seconds 60]

Starts Google's Pub/Sub emulator and a local HTTP receiver, runs the streaming job on the
DirectRunner (pinned, as ``run --streaming`` does) or on Flink's embedded cluster (the job
server from scripts/fetch_flink_jobserver.py, LOOPBACK, the portable Pub/Sub reader with
immediate acks) with two connectors:

* ``realtime``: ``type: http`` to the local receiver, ``batch: {max_events: 500,
  max_wait_s: 0.5}``;
* ``bulk``: ``type: file`` (object-store style bulking), ``batch: {max_events: 1000,
  max_wait_s: 30}``.

Each event's ``event.timestamp`` is its publish time (ms). Latency = arrival time at the
receiver (realtime) or the file's mtime (bulk) minus that. Prints p50/p95/p99/max per
connector and how many events arrived. The DirectRunner is not a latency reference (see
docs/beam-limits.md); this measures what it does. On Flink, publishing starts once a
warm-up event has reached the receiver (the job server and cluster take ~10-20 s to start),
and the reader stops ``--runner-wait`` seconds after the last publish; the job then drains
and finishes by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLINK_STARTUP_BUDGET_S = 90.0
EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
ARRIVALS: dict[str, float] = {}
LOCK = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    """Records the arrival time of each event in a JSON-array POST (the http connector)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        now = time.time()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with LOCK:
            for record in json.loads(body):
                ARRIVALS.setdefault(record["event_id"], now)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> str:
    if not values:
        return "no events"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return (
        f"n={len(values)} p50={q[49]:.2f}s p95={q[94]:.2f}s p99={q[98]:.2f}s max={max(values):.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to publish")
    parser.add_argument("--runner-wait", type=float, default=40.0, help="drain time after")
    parser.add_argument("--runner", choices=("direct", "flink"), default="direct")
    parser.add_argument(
        "--flink-option",
        action="append",
        default=[],
        help="extra pipeline option of the Flink run, e.g. "
        "--flink-option=--max_bundle_time_mills=1000 (the job sets 100 by itself)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    port = free_port()
    emulator = subprocess.Popen(
        [EMULATOR, "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the script starts a JVM: stop the whole group
    )
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = Path(tempfile.mkdtemp(prefix="latency-"))
    try:
        run(args, server.server_address[1], out)
    finally:
        server.shutdown()
        os.killpg(emulator.pid, signal.SIGKILL)


def run(args: argparse.Namespace, http_port: int, out: Path) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    import beam_pipeline.options  # noqa: F401  (declares the Flink options it passes on)
    from beam_pipeline.pipeline import build_streaming_pipeline
    from transforms.config import parse_config
    from transforms.pubsub_read import PubSubReading

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    deadline = time.monotonic() + 60
    while True:
        try:
            topic = pub.create_topic(name="projects/latency-bench/topics/events").name
            break
        except GoogleAPICallError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    subscription = sub.create_subscription(
        name="projects/latency-bench/subscriptions/events", topic=topic
    ).name
    config = parse_config(
        f"""
connectors:
  - id: realtime
    type: http
    deliver:
      endpoint: "http://127.0.0.1:{http_port}/events"
      batch: {{max_events: 500, max_wait_s: 0.5}}
  - id: bulk
    type: file
    deliver: {{path: "{out}/bulk", format: ndjson, batch: {{max_events: 1000, max_wait_s: 30}}}}
dead_letter: {{path: "{out}/dead_letter"}}
"""
    )
    if args.runner == "flink":
        jar = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "fetch_flink_jobserver.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        options = PipelineOptions(
            [
                "--runner=FlinkRunner",
                "--flink_master=[local]",
                f"--flink_job_server_jar={jar}",
                "--environment_type=LOOPBACK",
                "--parallelism=1",
                "--streaming",
                *args.flink_option,
            ]
        )
        # The reader must stop by itself (cancelling drops buffered batches): after a
        # start-up budget, the publishing and the drain.
        stop_at = time.time() + FLINK_STARTUP_BUDGET_S + args.seconds + args.runner_wait + 35
        reading = PubSubReading(portable=True, ack="immediate", stop_at=stop_at)
        pipeline = beam.Pipeline(options=options)
    else:
        options = PipelineOptions()
        options.view_as(StandardOptions).streaming = True
        reading = PubSubReading()
        pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(pipeline, config, subscription=subscription, reading=reading)
    result = pipeline.run()
    if args.runner == "flink":
        warm, started = 0, time.monotonic()
        while not any(i.startswith("w") for i in ARRIVALS):
            if time.monotonic() - started > FLINK_STARTUP_BUDGET_S:
                raise SystemExit("the Flink job did not deliver a warm-up event in time")
            event = {"event_id": f"w{warm}", "event": {"type": "heartbeat", "timestamp": 0}}
            pub.publish(topic, json.dumps(event).encode())
            warm += 1
            time.sleep(0.5)
    published: dict[str, float] = {}
    start = time.time()
    n = 0
    while time.time() - start < args.seconds:
        due = start + n / args.rate
        time.sleep(max(0.0, due - time.time()))  # the clock moves between two reads
        now = time.time()
        event_id = f"e{n}"
        event = {"event_id": event_id, "event": {"type": "heartbeat", "timestamp": int(now * 1000)}}
        pub.publish(topic, json.dumps(event).encode())
        published[event_id] = now
        n += 1
    drain_end = time.time() + args.runner_wait
    while time.time() < drain_end and len(published.keys() & ARRIVALS.keys()) < n:
        time.sleep(0.5)
    time.sleep(min(max(drain_end - time.time(), 0), 35))  # let the 30 s bulk flush
    if args.runner == "flink":
        result.wait_until_finish()
    else:
        stopper = threading.Thread(target=result.cancel)
        stopper.start()
        while stopper.is_alive():
            pub.publish(topic, b" ").result()
            stopper.join(timeout=1)

    realtime = [ARRIVALS[i] - published[i] for i in published if i in ARRIVALS]
    bulk = []
    for path in (out / "bulk").rglob("*.ndjson"):
        mtime = path.stat().st_mtime
        for line in path.read_text().splitlines():
            event_id = json.loads(line)["event_id"]
            if event_id in published:  # not a warm-up event
                bulk.append(mtime - published[event_id])
    runner = "DirectRunner"
    if args.runner == "flink":
        runner = " ".join(["Flink, portable reader", *args.flink_option])
    print(f"published {n} events at {args.rate:g}/s for {args.seconds:g} s ({runner})")
    print(f"realtime (http, max_wait_s 0.5): {percentiles(realtime)}")
    print(f"bulk (file, max_wait_s 30):      {percentiles(bulk)}")


if __name__ == "__main__":
    main()
