"""Backfill throughput into each object-store stand-in, against the file connector, same run.

    .venv/bin/python bench/object_stores.py [--events 200000] [--repeat 1] [--chunk-lines 5000]

Generates ``--events`` events (examples/generate_events.py, seed 42), starts moto,
gcp-storage-emulator and Azurite on free loopback ports (the same code as the tests), then
runs ``python -m beam_pipeline run`` once per destination and repetition, each in its own
process, with the same connector settings (all events, prefix by event type and hour,
``ndjson.gz``, 1,000 events per object), into a fresh bucket each time. It checks that every
event was delivered, and prints a markdown table: wall time, events/s, the ratio to the
file connector, the job's CPU time and events per CPU-second, its peak RSS, and the CPU
time the stand-in server itself used. Repetitions report the median run.

The stand-ins are local servers on the same 2 cores as the job, so the figures measure the
connector path (encode, name, client, HTTP) plus the stand-in's own cost, not the
throughput of the real services.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("file", "s3", "gcs", "azure_blob")


@dataclass
class Run:
    """One measured job run."""

    target: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    objects: int
    delivered: int
    standin_cpu_s: float


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_job(config: Path, source: Path, summary: Path, env: dict[str, str], chunk: int) -> Any:
    import subprocess

    argv = [
        sys.executable,
        "-m",
        "beam_pipeline",
        "run",
        "--config",
        str(config),
        "--input",
        str(source),
        "--summary-json",
        str(summary),
        "--chunk-lines",
        str(chunk),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--chunk-lines", type=int, default=5000)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from examples.generate_events import generate
    from tests.standins import object_stores as so

    work = Path(tempfile.mkdtemp(prefix="bench-object-stores-"))
    source = work / "events.jsonl.gz"
    with gzip.open(source, "wb", compresslevel=1) as fh:
        for line in generate(args.events, seed=42):
            fh.write(line + b"\n")

    servers = {
        "s3": so.start_server("moto_server", so.moto_argv, work),
        "gcs": so.start_server("gcp-storage-emulator", so.gcs_emulator_argv, work),
        "azure_blob": so.start_server("azurite-blob", so.azurite_argv, work),
    }
    try:
        stores = {kind: so.make_store(kind, server) for kind, server in servers.items()}
        runs: dict[str, list[Run]] = {t: [] for t in TARGETS}
        for rep in range(args.repeat):
            for target in TARGETS:
                runs[target].append(one_run(target, rep, work, source, stores, args.chunk_lines))
    finally:
        for server in servers.values():
            server.stop()

    print(table(runs, args))
    shutil.rmtree(work, ignore_errors=True)  # kept when a run fails, for its logs
    return 0


def one_run(
    target: str, rep: int, work: Path, source: Path, stores: dict[str, Any], chunk: int
) -> Run:
    env = {**os.environ}
    layout = {
        "prefix": "{event_type}/{year}/{month}/{day}/{hour}/",
        "format": "ndjson.gz",
        "batch": {"max_events": 1000},
    }
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    store = stores.get(target)
    if store is None:
        deliver = {"path": str(work / f"out-{rep}" / "file"), **layout}
        standin_pid = None
    else:
        store.create_bucket(bucket)
        deliver = {**store.deliver(bucket), **layout}
        env.update(store.env)
        standin_pid = store.server.proc.pid
    config = work / f"{target}-{rep}.yaml"
    config.write_text(
        json.dumps(
            {
                "connectors": [{"id": "bench", "type": target, "deliver": deliver}],
                "dead_letter": {"path": str(work / f"dl-{target}-{rep}")},
            }
        )
    )
    summary_path = work / f"{target}-{rep}.summary.json"
    before = proc_cpu_s(standin_pid) if standin_pid else 0.0
    wall, usage = run_job(config, source, summary_path, env, chunk)
    standin_cpu = (proc_cpu_s(standin_pid) - before) if standin_pid else 0.0
    summary = json.loads(summary_path.read_text())
    (row,) = summary["connectors"]
    if not summary["balanced"] or row["dead_lettered"]:
        raise SystemExit(f"{target}: not every event was delivered: {row}")
    if store is None:
        objects = sum(1 for p in (work / f"out-{rep}" / "file").rglob("*") if p.is_file())
    else:
        objects = len(store.names(bucket))
    return Run(
        target,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        objects,
        row["delivered"],
        standin_cpu,
    )


def table(runs: dict[str, list[Run]], args: argparse.Namespace) -> str:
    def median_run(rs: list[Run]) -> Run:
        return sorted(rs, key=lambda r: r.wall_s)[len(rs) // 2]

    base = median_run(runs["file"])
    base_rate = base.delivered / base.wall_s
    lines = [
        f"{args.events:,} events, ndjson.gz, 1,000 events/object, chunk {args.chunk_lines}, "
        f"median of {args.repeat} run(s) each; CPU count {os.cpu_count()}",
        "",
        "| destination | objects | wall s | events/s | vs file | job CPU s | events/CPU-s "
        "| peak RSS MiB | stand-in CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        r = median_run(runs[target])
        rate = r.delivered / r.wall_s
        spread = ""
        if len(runs[target]) > 1:
            walls = [x.wall_s for x in runs[target]]
            spread = f" (±{statistics.pstdev(walls):.1f})"
        lines.append(
            f"| {target} | {r.objects} | {r.wall_s:.1f}{spread} | {rate:,.0f} | "
            f"{rate / base_rate:.2f} | {r.cpu_s:.1f} | {r.delivered / r.cpu_s:,.0f} | "
            f"{r.peak_rss_mib:.0f} | {r.standin_cpu_s:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
