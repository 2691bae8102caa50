"""Evidence: how fast does the DirectRunner read from Pub/Sub (emulator)?

    python bench/evidence/direct_pubsub_read.py [--messages 60] [--seconds 45]

Starts Google's Pub/Sub emulator, publishes N messages, first pulls them with a plain
subscriber (timing each pull), then runs ``ReadFromPubSub -> print`` on the DirectRunner
for a fixed time and reports how many messages it read and when. See docs/beam-limits.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Any

EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the Pub/Sub emulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=45)
    args = parser.parse_args()
    port = free_port()
    emulator = subprocess.Popen(
        [EMULATOR, "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the script starts a JVM: stop the whole group
    )
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    try:
        wait_port(port)
        run(args.messages, args.seconds)
    finally:
        os.killpg(emulator.pid, signal.SIGKILL)


def run(n: int, seconds: float) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from google.cloud import pubsub_v1

    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = pub.create_topic(name="projects/evidence/topics/plain").name
    plain = sub.create_subscription(name="projects/evidence/subscriptions/plain", topic=topic).name
    for f in [pub.publish(topic, b"m%d" % i) for i in range(n)]:
        f.result()
    got = 0
    while got < n:
        t0 = time.monotonic()
        response = sub.pull(subscription=plain, max_messages=10, timeout=30)
        ids = [m.ack_id for m in response.received_messages]
        sub.acknowledge(subscription=plain, ack_ids=ids)
        got += len(ids)
        print(f"plain subscriber: pulled {len(ids)} in {time.monotonic() - t0:.3f} s")

    topic2 = pub.create_topic(name="projects/evidence/topics/beam").name
    beam_sub = sub.create_subscription(
        name="projects/evidence/subscriptions/beam", topic=topic2
    ).name
    for f in [pub.publish(topic2, b"m%d" % i) for i in range(n)]:
        f.result()
    import tempfile

    log = os.path.join(tempfile.mkdtemp(), "arrivals.log")
    start = time.time()

    def record(_: Any, log: str = log, start: float = start) -> None:
        # The DoFn runs on a pickled copy: report through a file, not a captured list.
        with open(log, "a") as fh:
            fh.write(f"{time.time() - start}\n")

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    p | beam.io.ReadFromPubSub(subscription=beam_sub) | beam.Map(record)
    result = p.run()
    time.sleep(seconds)
    stopper = threading.Thread(target=result.cancel)
    stopper.start()
    while stopper.is_alive():
        pub.publish(topic2, b" ").result()
        stopper.join(timeout=1)
    with open(log) as fh:
        seen = [float(x) for x in fh.read().split()]
    print(f"DirectRunner: read {len(seen)} of {n} messages in {seconds:.0f} s")
    if seen:
        print(f"  first at {seen[0]:.2f} s, last at {seen[-1]:.2f} s")


if __name__ == "__main__":
    main()
