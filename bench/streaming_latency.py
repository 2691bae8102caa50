"""Streaming latency: publish to Pub/Sub at a steady rate, measure publish-to-delivery time.

    python bench/streaming_latency.py [--runner prism] [--rate 200] [--seconds 60]
    python bench/streaming_latency.py --runner flink [--rate 200] [--seconds 60]
    python bench/streaming_latency.py --runner direct [--rate 200] [--seconds 30]

Starts Google's Pub/Sub emulator and a local HTTP receiver, and runs the streaming job with
two connectors on one of:

* ``prism`` (the default engine): the real command, ``python -m beam_pipeline run
  --streaming --subscription ...`` without ``--runner``, as a child process;
* ``flink``: the same command with ``--runner FlinkRunner --flink_master [local]`` (the job
  server from scripts/fetch_flink_jobserver.py, LOOPBACK, ``--parallelism 1``,
  ``--pubsub-ack immediate``);
* ``direct``: the BundleBasedDirectRunner in this process (``--runner DirectRunner``).

``--job-option`` (alias ``--flink-option``) adds a flag to the Prism or Flink command.

The connectors:

* ``realtime``: ``type: http`` to the local receiver, ``batch: {max_events: 500,
  max_wait_s: 0.5}`` (``--realtime-events`` and
  ``--realtime-wait`` set them);
* ``bulk``: ``type: file`` (object-store style bulking), ``batch: {max_events: 1000,
  max_wait_s: 30}``.

Each event's ``event.timestamp`` is its publish time (ms). Latency = arrival time at the
receiver (realtime) or the file's mtime (bulk) minus that. Prints p50/p95/p99/max per
connector, how many events arrived (and how many twice), the bulk objects' sizes, and for
the child-process engines the job's CPU: the ``getrusage(RUSAGE_CHILDREN)`` user+sys delta
around it (the job, and Prism or the Flink job server it starts and reaps), per event
published, start-up and idle time included. The DirectRunner is not a latency reference
(see docs/beam-limits.md); this measures what it does.

On Prism and Flink, publishing starts once a warm-up event has reached the receiver (the
engine takes seconds to start). The bench then waits until every event reached the
receiver or ``--runner-wait`` s passed, and up to 35 s more for the 30 s bulk batches, and
sends SIGTERM: the job stops reading, drains (open batches flush) and exits. Its
``--run-for-s`` (a start-up budget plus all of that) is only the backstop. The job's log
is kept in the output folder; the report counts its tracebacks and "not in a finalizable
state" errors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STARTUP_BUDGET_S = 90.0
"""How long Prism or Flink may take to deliver the first warm-up event."""
BULK_FLUSH_S = 35.0
"""Wait after the last realtime arrival for the bulk connector's 30 s batches."""
EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
ARRIVALS: dict[str, float] = {}
RECEIVED: Counter[str] = Counter()
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
                RECEIVED[record["event_id"]] += 1
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
    parser.add_argument("--runner", choices=("prism", "direct", "flink"), default="prism")
    parser.add_argument(
        "--realtime-events",
        type=int,
        default=500,
        help="the realtime connector's batch.max_events (500; 1 sends each event alone, "
        "with no batching wait at all)",
    )
    parser.add_argument(
        "--realtime-wait",
        type=float,
        default=0.5,
        help="the realtime connector's batch.max_wait_s (0.5; lower it to see the rest of "
        "the latency without the batching wait)",
    )
    parser.add_argument(
        "--job-option",
        "--flink-option",
        dest="job_option",
        action="append",
        default=[],
        help="extra flag of the Prism or Flink job, e.g. --job-option=--dedup-window-s=0 or "
        "--flink-option=--max_bundle_time_mills=1000 (the job sets 100 on Flink by itself)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

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
        emulator.wait()


def job_command(args: argparse.Namespace, config: Path, subscription: str, out: Path) -> list[str]:
    """The streaming command of ``--runner prism`` or ``flink``, as a user would type it."""
    # A backstop only: the bench stops the job with SIGTERM when it has what it needs.
    run_for_s = STARTUP_BUDGET_S + args.seconds + args.runner_wait + BULK_FLUSH_S + 30
    command = [
        sys.executable,
        "-m",
        "beam_pipeline",
        "run",
        "--streaming",
        "--config",
        str(config),
        "--subscription",
        subscription,
        f"--run-for-s={run_for_s:.0f}",
        "--no-progress",
        "--summary-json",
        str(out / "summary.json"),
    ]
    if args.runner == "flink":
        jar = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "fetch_flink_jobserver.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        command += [
            "--runner=FlinkRunner",
            "--flink_master=[local]",
            f"--flink_job_server_jar={jar}",
            "--environment_type=LOOPBACK",
            "--parallelism=1",
            "--pubsub-ack=immediate",
        ]
    return command + args.job_option


def run(args: argparse.Namespace, http_port: int, out: Path) -> None:
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

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
    config = out / "config.yaml"
    config.write_text(
        f"""
connectors:
  - id: realtime
    type: http
    deliver:
      endpoint: "http://127.0.0.1:{http_port}/events"
      batch: {{max_events: {args.realtime_events}, max_wait_s: {args.realtime_wait:g}}}
  - id: bulk
    type: file
    deliver: {{path: "{out}/bulk", format: ndjson, batch: {{max_events: 1000, max_wait_s: 30}}}}
dead_letter: {{path: "{out}/dead_letter"}}
"""
    )
    job: subprocess.Popen[bytes] | None = None
    result: Any = None
    log = out / "job.log"
    if args.runner == "direct":
        result = start_direct(config, subscription)
    else:
        command = job_command(args, config, subscription, out)
        print(" ".join(command), file=sys.stderr)
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        job_started = time.monotonic()
        with open(log, "wb") as fh:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            job = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
        warm_up(pub, topic, job)
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
    publish_s = time.time() - start
    drain_end = time.time() + args.runner_wait
    while time.time() < drain_end and len(published.keys() & ARRIVALS.keys()) < n:
        time.sleep(0.5)
    time.sleep(min(max(drain_end - time.time(), 0), BULK_FLUSH_S))  # let the 30 s bulk flush
    cpu = wall = None
    if job is not None:
        job.send_signal(signal.SIGTERM)  # stop reading, drain, exit
        try:
            code = job.wait(timeout=180)
        except subprocess.TimeoutExpired:
            job.kill()
            code = job.wait()
            print("the job did not finish within 180 s of SIGTERM: killed", file=sys.stderr)
        wall = time.monotonic() - job_started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
            cpu_after.ru_stime - cpu_before.ru_stime
        )
        if code != 0:
            print(f"the job exited with {code}: see {log}", file=sys.stderr)
    else:
        stopper = threading.Thread(target=result.cancel)
        stopper.start()
        while stopper.is_alive():
            pub.publish(topic, b" ").result()
            stopper.join(timeout=1)
    report(args, out, published, publish_s, cpu, wall, log if job is not None else None)


def start_direct(config: Path, subscription: str) -> Any:
    """The job on the BundleBasedDirectRunner in this process; its running result."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    from beam_pipeline.pipeline import build_streaming_pipeline
    from transforms.config import parse_config
    from transforms.pubsub_read import PubSubReading

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    build_streaming_pipeline(
        pipeline,
        parse_config(config.read_text()),
        subscription=subscription,
        reading=PubSubReading(),
    )
    return pipeline.run()


def warm_up(pub: Any, topic: str, job: subprocess.Popen[bytes]) -> None:
    """Publish warm-up events until one reaches the receiver: the engine has started."""
    warm, started = 0, time.monotonic()
    while not any(i.startswith("w") for i in ARRIVALS):
        if job.poll() is not None:
            raise SystemExit(f"the job exited with {job.returncode} before delivering")
        if time.monotonic() - started > STARTUP_BUDGET_S:
            job.kill()
            raise SystemExit("the job did not deliver a warm-up event in time")
        event = {"event_id": f"w{warm}", "event": {"type": "heartbeat", "timestamp": 0}}
        pub.publish(topic, json.dumps(event).encode())
        warm += 1
        time.sleep(0.5)
    print(f"warm: first delivery after {time.monotonic() - started:.1f} s", file=sys.stderr)


def report(
    args: argparse.Namespace,
    out: Path,
    published: dict[str, float],
    publish_s: float,
    cpu: float | None,
    wall: float | None,
    log: Path | None,
) -> None:
    """Print what arrived, how late, the bulk objects, the job's CPU and log errors."""
    n = len(published)
    realtime = [ARRIVALS[i] - published[i] for i in published if i in ARRIVALS]
    twice = sum(1 for i in published if RECEIVED[i] > 1)
    bulk: list[float] = []
    sizes: list[int] = []
    seen: Counter[str] = Counter()
    for path in (out / "bulk").rglob("*.ndjson"):
        mtime = path.stat().st_mtime
        lines = path.read_text().splitlines()
        sizes.append(len(lines))
        for line in lines:
            event_id = json.loads(line)["event_id"]
            if event_id in published:  # not a warm-up event
                bulk.append(mtime - published[event_id])
                seen[event_id] += 1
    runner = {
        "direct": "DirectRunner",
        "prism": "Prism (default engine)",
        "flink": "Flink, portable reader",
    }[args.runner]
    runner = " ".join([runner, *args.job_option])
    print(f"published {n} events at {args.rate:g}/s for {args.seconds:g} s ({runner})")
    if publish_s > args.seconds * 1.02:
        print(f"note: publishing took {publish_s:.1f} s: the publisher fell behind the rate")
    print(
        f"realtime (http, max_events {args.realtime_events}, max_wait_s "
        f"{args.realtime_wait:g}): {percentiles(realtime)}; "
        f"missing {n - len(realtime)}, twice {twice}"
    )
    print(
        f"bulk (file, max_wait_s 30):      {percentiles(bulk)}; "
        f"missing {n - len(seen)}, twice {sum(1 for c in seen.values() if c > 1)}"
    )
    if sizes:
        print(
            f"bulk objects: {len(sizes)}, events per object max {max(sizes)}, "
            f"median {statistics.median(sizes):g}"
        )
    if cpu is not None and wall is not None:
        print(
            f"job: {wall:.1f} s wall, {cpu:.1f} CPU-s (start-up and idle included), "
            f"{cpu / max(n, 1) * 1000:.2f} CPU-ms per event published"
        )
    if log is not None:
        text = log.read_text(errors="replace")
        print(
            f"job log {log}: {text.count('Traceback')} tracebacks, "
            f"{text.count('not in a finalizable state')} 'not in a finalizable state'"
        )
        summary = out / "summary.json"
        if summary.exists():
            balanced = json.loads(summary.read_text())["balanced"]
            print(f"job summary: balanced={balanced}")


if __name__ == "__main__":
    main()
