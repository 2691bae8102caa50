"""Backfill throughput of each API connector into its local stand-in, against a plain loop.

    .venv/bin/python bench/api_connectors.py [--events 50000] [--repeat 1] [--kinds ...]

Generates ``--events`` events (examples/generate_events.py, seed 42) and, for each API
connector (``http``, ``datadog_logs``, ``splunk_hec``, ``new_relic``, ``elasticsearch``,
``pubsub``), delivers all of them twice, each time in its own process:

1. **job**: ``python -m beam_pipeline run`` (FnApiRunner) with one connector that takes
   every event, its shipped template, batches of 1,000 and ``concurrency: 4``;
2. **loop** (the Python bound): a plain single-process loop over the same functions
   (parse, route, filter, package, then the same sink's ``write`` per 1,000 events, one
   request at a time) with no Beam.

The stand-in receivers (tests/receivers) run in this process, on other threads than the
measured one, and Pub/Sub uses Google's emulator, so the figures measure the connector
path (encode, gzip, HTTP client, the stand-in's own parsing) on this machine, not the
real services. Every run is checked: all events delivered, none dead-lettered.

Prints a markdown table: wall time, events/s, requests/s (requests the receiver
answered; Pub/Sub: n/a), the job's CPU seconds, events per CPU-second and peak RSS, the
CPU the stand-in used meanwhile (receivers: this process; Pub/Sub: the emulator's JVM),
and the ratio job/loop of events/s. Repetitions report the median run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("http", "datadog_logs", "splunk_hec", "new_relic", "elasticsearch", "pubsub")
TEMPLATES = {
    "http": "flat_event",
    "datadog_logs": "datadog_logs",
    "splunk_hec": "splunk_hec",
    "new_relic": "new_relic",
    "elasticsearch": "elasticsearch",
    "pubsub": "flat_event",
}
BATCH = 1000


@dataclass
class Measured:
    """One measured run of the job or the loop."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    delivered: int
    requests: int | None
    standin_cpu_s: float


def deliver_section(kind: str, url: str, topic: str) -> str:
    from tests.receivers.credentials import NEW_RELIC_ACCOUNT, WEBHOOK_PATH

    base = {
        "http": f"endpoint: '{url}{WEBHOOK_PATH}', body: ndjson, compression: gzip, headers: "
        "{Authorization: '${env:TEST_WEBHOOK_AUTH}', X-Source: telemetry}",
        "datadog_logs": f"endpoint: '{url}', api_key: '${{env:TEST_DD_API_KEY}}'",
        "splunk_hec": f"endpoint: '{url}', token: '${{env:TEST_SPLUNK_TOKEN}}', index: video",
        "new_relic": f"endpoint: '{url}', account_id: {NEW_RELIC_ACCOUNT}, "
        "api_key: '${env:TEST_NEW_RELIC_KEY}'",
        "elasticsearch": f"endpoint: '{url}', index: bench, api_key: '${{env:TEST_ES_API_KEY}}'",
        "pubsub": f"topic: {topic}",
    }[kind]
    return "{" + base + f", batch: {{max_events: {BATCH}, max_wait_s: 1}}, concurrency: 4}}"


def config_text(kind: str, url: str, topic: str, dead: Path) -> str:
    return (
        f"connectors:\n  - id: bench_{kind}\n    type: {kind}\n"
        f"    package: {{template: {TEMPLATES[kind]}}}\n"
        f"    deliver: {deliver_section(kind, url, topic)}\n"
        f"dead_letter: {{path: '{dead}'}}\n"
    )


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run a child process; return its (wall s, CPU s, peak RSS MiB)."""
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        # Peak RSS from VmHWM while it runs: ru_maxrss would include this process's own
        # memory, which a forked child carries until it execs.
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, vm_hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-3000:].decode("utf-8", "replace")
            raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024


def vm_hwm_kib(pid: int) -> int:
    """A live process's peak resident set size so far (Linux /proc), 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measure(kind: str, mode: str, source: Path, env: dict[str, str], emulator: Any) -> Measured:
    from tests.receivers.base import Receiver
    from tests.receivers.credentials import make_api

    receiver = Receiver(make_api(kind)) if kind != "pubsub" else None
    topic = emulator.create_topic("bench") if emulator is not None else ""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "delivery.yaml"
        cfg.write_text(config_text(kind, receiver.url if receiver else "", topic, Path(tmp)))
        summary = Path(tmp) / "summary.json"
        if mode == "job":
            argv = [sys.executable, "-m", "beam_pipeline", "run", "--config", str(cfg)]
            argv += ["--input", str(source), "--summary-json", str(summary)]
        else:
            argv = [sys.executable, __file__, "--loop", str(cfg), str(source), str(summary)]
        server = emulator if kind == "pubsub" else None
        standin_before = standin_cpu(server)
        wall, cpu, rss = run_child(argv, env)
        standin = standin_cpu(server) - standin_before
        result = json.loads(summary.read_text())
        row = result["connectors"][0] if "connectors" in result else result
        if row["dead_lettered"]:
            raise SystemExit(f"{kind} {mode}: {row['dead_lettered']} events dead-lettered")
        requests = None
        if receiver is not None:
            reqs, items = receiver.snapshot()
            requests = len(reqs)
            receiver.stop()
            if len(items) != row["delivered"]:
                raise SystemExit(f"{kind} {mode}: receiver has {len(items)} of {row['delivered']}")
    return Measured(wall, cpu, rss, row["delivered"], requests, standin)


def standin_cpu(emulator: Any) -> float:
    """CPU seconds used so far by the stand-ins (receiver threads here, or the emulator)."""
    if emulator is None:
        return time.process_time()
    fields = Path(f"/proc/{emulator.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_loop(config_path: str, source: str, summary: str) -> None:
    """The Python bound: the same rules and the same sink, no Beam, one request at a time."""
    from transforms.config import compile_connectors, load_config
    from transforms.connectors import make_sink
    from transforms.connectors.base import DeliveryBatch
    from transforms.parse import open_lines
    from transforms.rules.events import event_time_ms, parse_line
    from transforms.rules.records import Packaged

    (c,) = compile_connectors(load_config(config_path))
    sink = make_sink(c.id, c.type, c.deliver)
    sink.open()
    delivered = 0
    pending: list[Packaged] = []

    def flush() -> None:
        nonlocal delivered, pending
        if pending:
            delivered += sink.write(DeliveryBatch(c.id, "", pending)).events
            pending = []

    for line in open_lines(source):
        event = parse_line(line)
        if not isinstance(event, dict) or not c.route.matches(event):
            continue
        record = c.packager.apply(c.filter.apply(event))
        pending.append(
            Packaged(event["event_id"], event_time_ms(event), event["event"]["type"], record, event)
        )
        if len(pending) >= BATCH:
            flush()
    flush()
    sink.close()
    Path(summary).write_text(json.dumps({"delivered": delivered, "dead_lettered": 0}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--loop", nargs=3, metavar=("CONFIG", "INPUT", "SUMMARY"), help="internal")
    args = parser.parse_args()
    if args.loop:
        plain_loop(*args.loop)
        return 0

    from examples.generate_events import generate
    from tests.receivers.credentials import SECRET_ENV

    env = {**os.environ, **SECRET_ENV, "PYTHONPATH": str(ROOT)}
    emulator = None
    if "pubsub" in args.kinds:
        from tests.standins.pubsub import start_emulator

        emulator = start_emulator(Path(tempfile.mkdtemp()))
        env["PUBSUB_EMULATOR_HOST"] = emulator.host
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "events.jsonl"
            source.write_bytes(b"\n".join(generate(args.events, seed=42)) + b"\n")
            rows = []
            for kind in args.kinds:
                runs: dict[str, list[Measured]] = {"job": [], "loop": []}
                for _ in range(args.repeat):
                    for mode in ("job", "loop"):
                        runs[mode].append(measure(kind, mode, source, env, emulator))
                rows.append((kind, *(_median(runs[m]) for m in ("job", "loop"))))
    finally:
        if emulator is not None:
            emulator.stop()
    print(f"{args.events} events, batches of {BATCH}, concurrency 4, {os.cpu_count()} CPUs\n")
    print(
        "| connector | job s | job events/s | job requests/s | job CPU s | events/CPU-s "
        "| peak RSS MiB | stand-in CPU s | loop events/s | job/loop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, job, loop in rows:
        eps = job.delivered / job.wall_s
        loop_eps = loop.delivered / loop.wall_s
        rps = f"{job.requests / job.wall_s:,.1f}" if job.requests is not None else "n/a"
        print(
            f"| {kind} | {job.wall_s:.1f} | {eps:,.0f} | {rps} | {job.cpu_s:.1f} "
            f"| {job.delivered / job.cpu_s:,.0f} | {job.peak_rss_mib:.0f} "
            f"| {job.standin_cpu_s:.1f} | {loop_eps:,.0f} "
            f"| {eps / loop_eps:.2f} |"
        )
    return 0


def _median(runs: list[Measured]) -> Measured:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


if __name__ == "__main__":
    sys.exit(main())
