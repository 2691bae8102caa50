r"""Benthos, a real stream processor, on ``bench/agent_like.yaml``'s job: CPU per event.

    python bench/agent_compare.py [--events 1000000] [--repeat 3] [--no-job]
                                  [--variants NAME,...] [--flush-period 5s] [--build]

Issue 8 weighs the job against a C log agent. This puts an open-source agent we can
build here next to it: Benthos v4.60.0 (Go, MIT), a minimal binary from
``bench/agents/benthos`` (see its README.md), running the same job on the same corpus:
gzip JSON lines in, 3 routes by ``event.type`` with the same field filters and renames,
NDJSON files of 1,000 records per connector. It prints CPU per event for each Benthos
variant, for the hand-written Python loop (``bench/hand_loop.py``, in this process, CPU
clock of this process) and for the project's job (``python -m beam_pipeline run``,
DirectRunner with 1 worker, unless ``--no-job``).

Variants (``--variants`` takes the names, comma-separated; all by default). Each is
``agent_like.yaml`` as is or edited by a function here (:data:`VARIANTS`), written to the
run's temporary folder, so the routes' rules are stated once:

====================  ==============================================================
``mutation``          ``agent_like.yaml``: switch output, a ``mutation`` per case
``mapping``           :func:`as_mappings`: a ``mapping`` (``root = this`` first) per case
``kind-t1``           :func:`kind_in_metadata`: event.type read into metadata by a
                      1-thread pipeline, switch checks on it
``kind-t2``           the same with 2 pipeline threads
``input-batch``       :func:`batched_input`: input batches of 1,000 (files of 1,000 to
                      ~2,000 records: not quite the same file contract)
``gogc400``           ``agent_like.yaml`` with ``GOGC=400`` (collect 4x less often)
``gogc-off``          ``agent_like.yaml`` with ``GOGC=off GOMEMLIMIT=1GiB``
====================  ==============================================================

Each Benthos run is a child process (``INPUT``, ``OUT``, ``FLUSH_PERIOD`` in its
environment) timed by ``resource.getrusage(RUSAGE_CHILDREN)`` deltas (user + sys) and a
wall clock; the job likewise, run from an empty temporary directory since its config's
paths are relative. Runs are interleaved (order reversed on odd repetitions) because the
machine is shared; each column is the best (minimum) of ``--repeat``. Wall time of a
Benthos run includes up to ``--flush-period`` of idle wait at the end: the batch period
is what flushes each route's last, partial file (see the config's header).

The first repetition of every variant is checked against the hand loop's output: the
same records per connector, compared as parsed JSON objects (Go writes keys sorted), in
any order, keyed by ``event_id``. A difference is an error (exit 1). The binary is built
with ``go build`` if missing (``--build`` rebuilds), into ``~/.cache/telemetry-delivery/
benthos`` (``$BENTHOS_BIN`` overrides the binary's path).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import hand_loop  # noqa: E402
from bench.corpus import ensure_corpus  # noqa: E402
from transforms.runtime import tune_gc  # noqa: E402

AGENT = ROOT / "bench" / "agents" / "benthos"
BASE_CONFIG = AGENT / "agent_like.yaml"
CACHE = Path.home() / ".cache" / "telemetry-delivery" / "benthos"
BINARY = Path(os.environ.get("BENTHOS_BIN") or CACHE / "benthos")
GO_ENV = {
    "GOPATH": str(CACHE / "gopath"),
    "GOMODCACHE": str(CACHE / "gomodcache"),
    "GOFLAGS": "-mod=mod",
}
BUILD = ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(BINARY), "."]
CONNECTORS = hand_loop.CONNECTORS
LOOP, JOB = "hand loop (Python + orjson)", "project job (DirectRunner, 1 worker)"


Config = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """One Benthos configuration: ``agent_like.yaml`` as is or edited, and environment."""

    name: str
    label: str
    edit: Callable[[Config], None] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def config(self) -> Config:
        """The variant's config: the base config with :attr:`edit` applied."""
        config: Config = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
        if self.edit is not None:
            self.edit(config)
        return config


def _cases(config: Config) -> list[Config]:
    return config["output"]["switch"]["cases"]


def as_mappings(config: Config) -> None:
    """Each route's rules as a ``mapping`` (``root = this`` first) instead of a ``mutation``."""
    for case in _cases(config):
        for processor in case["output"]["processors"]:
            processor["mapping"] = "root = this\n" + processor.pop("mutation")


def kind_in_metadata(threads: int) -> Callable[[Config], None]:
    """Read ``event.type`` once into metadata (a pipeline of ``threads``); checks use it."""

    def edit(config: Config) -> None:
        mutation = {"mutation": "meta kind = this.event.type"}
        config["pipeline"] = {"threads": threads, "processors": [mutation]}
        for case in _cases(config):
            case["check"] = case["check"].replace("this.event.type", "@kind")

    return edit


def batched_input(config: Config) -> None:
    """The file input inside a ``broker`` that batches 1,000 lines (files of 1,000-2,000)."""
    batching = {"count": 1000, "period": "${FLUSH_PERIOD:5s}"}
    config["input"] = {"broker": {"inputs": [config["input"]], "batching": batching}}


VARIANTS = (
    Variant("mutation", "benthos: switch + mutation"),
    Variant("mapping", "benthos: switch + mapping", as_mappings),
    Variant("kind-t1", "benthos: kind in metadata, 1 thread", kind_in_metadata(1)),
    Variant("kind-t2", "benthos: kind in metadata, 2 threads", kind_in_metadata(2)),
    Variant("input-batch", "benthos: input batches of 1,000 (files <= 2k)", batched_input),
    Variant("gogc400", "benthos: switch + mutation, GOGC=400", env={"GOGC": "400"}),
    Variant(
        "gogc-off",
        "benthos: switch + mutation, GOGC=off GOMEMLIMIT=1GiB",
        env={"GOGC": "off", "GOMEMLIMIT": "1GiB"},
    ),
)


@dataclass
class Timing:
    """Every repetition's CPU and wall seconds of one row."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


def build(force: bool = False) -> Path:
    """Build the Benthos binary from ``bench/agents/benthos`` unless it exists; return it."""
    if BINARY.exists() and not force:
        return BINARY
    if shutil.which("go") is None:
        sys.exit(
            f"no Benthos binary at {BINARY} and no `go` on PATH; build it with:\n"
            f"  cd {AGENT} && GOPATH={GO_ENV['GOPATH']} GOMODCACHE={GO_ENV['GOMODCACHE']} "
            f"GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o {BINARY} ."
        )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {BINARY} ({' '.join(BUILD)} in {AGENT}) ...", file=sys.stderr)
    subprocess.run(BUILD, cwd=AGENT, env={**os.environ, **GO_ENV}, check=True)
    return BINARY


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` to completion; return its (CPU seconds, wall seconds). Fails loudly."""
    cpu, wall = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True)
    cpu, wall = _children_cpu() - cpu, time.perf_counter() - wall
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        sys.exit(f"{cmd[0]} failed with exit code {done.returncode}:\n{tail}")
    return cpu, wall


def _lines(folder: Path) -> Iterator[bytes]:
    for path in sorted(folder.rglob("*.ndjson")):
        yield from path.read_bytes().splitlines()


def digests(folder: Path) -> dict[str, dict[str, bytes]]:
    """Per connector below ``folder/<id>``: ``event_id`` -> digest of the parsed record.

    The digest is of the record re-serialized with sorted keys, so two records have the
    same digest when they are the same JSON object, whatever their key order or escapes.
    """
    result: dict[str, dict[str, bytes]] = {}
    for cid in CONNECTORS:
        seen: dict[str, bytes] = {}
        for line in _lines(folder / cid):
            record = orjson.loads(line)
            canon = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            key = record["event_id"]
            if key in seen:
                raise ValueError(f"{folder / cid}: event_id {key} written twice")
            seen[key] = hashlib.blake2b(canon, digest_size=16).digest()
        result[cid] = seen
    return result


def file_counts(folder: Path) -> str:
    """``ops 1000 files, ...``: how each connector's records were split into files."""
    counts = (f"{cid} {sum(1 for _ in (folder / cid).rglob('*.ndjson'))}" for cid in CONNECTORS)
    return ", ".join(counts)


def record(folder: Path, cid: str, event_id: str) -> str:
    """The record of ``event_id`` under ``folder/<cid>``, re-serialized with sorted keys."""
    for line in _lines(folder / cid):
        parsed = orjson.loads(line)
        if parsed.get("event_id") == event_id:
            return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()
    return "(absent)"


def same_records(
    expected: dict[str, dict[str, bytes]], folder: Path, reference: Path, label: str
) -> bool:
    """Whether ``folder`` holds the records of ``expected``; prints the first difference."""
    actual = digests(folder)
    for cid in CONNECTORS:
        want, got = expected[cid], actual[cid]
        if want == got:
            continue
        missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
        changed = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
        print(
            f"{label}: connector {cid} differs from the hand loop: {len(want)} vs {len(got)} "
            f"records, {len(missing)} missing, {len(extra)} extra, {len(changed)} changed",
            file=sys.stderr,
        )
        if changed:
            print(f"  hand loop: {record(reference, cid, changed[0])}", file=sys.stderr)
            print(f"  {label}: {record(folder, cid, changed[0])}", file=sys.stderr)
        return False
    return True


def job_command(corpus: Path) -> list[str]:
    """The project's job on ``corpus``: ``bench/agent_like.yaml``, DirectRunner, 1 worker."""
    cmd = [sys.executable, "-m", "beam_pipeline", "run"]
    cmd += ["--config", str(ROOT / "bench" / "agent_like.yaml"), "--input", str(corpus)]
    return [*cmd, "--no-progress", "--direct_num_workers", "1"]


def job_env() -> dict[str, str]:
    """The job's environment: the repository first on ``PYTHONPATH`` (it runs elsewhere)."""
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _row(label: str, timing: Timing, events: int) -> str:
    cpu, wall = min(timing.cpu), min(timing.wall)
    return f"| {label} | {cpu:.2f} | {cpu * 1e6 / events:.2f} | {events / cpu:,.0f} | {wall:.2f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-job", action="store_true", help="skip the project's job")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--flush-period", default="5s", help="Benthos batch period")
    parser.add_argument("--build", action="store_true", help="rebuild the Benthos binary")
    args = parser.parse_args(argv)
    chosen = args.variants.split(",")
    unknown = set(chosen) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    variants = [v for v in VARIANTS if v.name in chosen]
    binary = build(args.build)
    (corpus,) = ensure_corpus(args.events)
    tune_gc()  # as hand_loop.py's main, for the in-process loop
    rows = [LOOP, *(v.label for v in variants), *(() if args.no_job else (JOB,))]
    timings = {label: Timing() for label in rows}
    started = datetime.now(timezone.utc)
    ok = True
    with tempfile.TemporaryDirectory(prefix="agent-compare-") as tmp:
        work = Path(tmp)
        reference = work / "run-0-0"  # the hand loop's first output: what every row must match
        expected: dict[str, dict[str, bytes]] = {}
        for rep in range(args.repeat):
            for label in rows if rep % 2 == 0 else reversed(rows):
                target = work / f"run-{rep}-{rows.index(label)}"
                target.mkdir()
                out = target
                if label == LOOP:
                    gc.collect()
                    cpu, wall = _self_cpu(), time.perf_counter()
                    hand_loop.hand_loop(corpus, target)
                    cpu, wall = _self_cpu() - cpu, time.perf_counter() - wall
                elif label == JOB:
                    cpu, wall = run_child(job_command(corpus), job_env(), target)
                    out = target / "out" / "agent_like"
                else:
                    variant = next(v for v in variants if v.label == label)
                    env = {"INPUT": str(corpus), "OUT": str(target)}
                    env |= {"FLUSH_PERIOD": args.flush_period, **variant.env}
                    config = work / f"{variant.name}.yaml"
                    config.write_text(yaml.safe_dump(variant.config()), encoding="utf-8")
                    cpu, wall = run_child([str(binary), "-c", str(config)], env, work)
                timings[label].cpu.append(cpu)
                timings[label].wall.append(wall)
                print(f"rep {rep}: {label}: {cpu:.2f} CPU-s, {wall:.2f} s", file=sys.stderr)
                if rep == 0 and label == LOOP:  # first on repetition 0
                    expected = digests(reference)
                elif rep == 0:
                    ok = same_records(expected, out, reference, label) and ok
                    print(f"  files: {file_counts(out)}", file=sys.stderr)
                if target != reference:
                    shutil.rmtree(target)
    if not ok:
        print("different records: not the same job", file=sys.stderr)
        return 1
    print(
        f"{args.events:,} events ({corpus.name}), bench/agent_like.yaml's job; same records "
        f"per connector for every row; best of {args.repeat} per column (interleaved runs); "
        f"{started:%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs. "
        f"Benthos wall includes up to {args.flush_period} idle (final batch period).\n"
    )
    print("| variant | CPU s | us/event | events per CPU-second | wall s |")
    print("|---|---:|---:|---:|---:|")
    for label in rows:
        print(_row(label, timings[label], args.events))
    spread = {label: statistics.median(t.cpu) for label, t in timings.items()}
    print("\nmedian CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in spread.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
