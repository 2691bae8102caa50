"""Per-stage CPU of the rules in two source trees, on the same events (an A/B of the hot path).

    git archive HEAD | tar -x -C /tmp/head     # the "before" tree
    python bench/rules_ab.py --before /tmp/head [--after .] [--events 100000] [--rounds 3]

Each round runs one child process per tree (``PYTHONPATH=<tree>``), alternating which
goes first, so both see the same background load. A child times, on the benchmark
corpus and the 5-connector config of ``bench/corpus.py``, the functions the pipeline
and the bound call, stage by stage (CPU time, best of 3 passes):

* ``parse``: :func:`parse_line` on every line;
* ``route``: every connector's :meth:`RouteRule.matches` on every event;
* ``filter``: :meth:`FieldFilter.apply` on the events each connector receives;
* ``package``: :meth:`Packager.apply` on those, then ``Packaged`` as Package builds it;
* ``encode``: :meth:`FileSink.write`'s encoding (:func:`encode_batch`, gzip included) of
  batches of ``batch.max_events``.

It also hashes everything each stage produced (events, routes, filtered events, records,
encoded bytes): the two trees must produce identical output, or the script fails.
Figures are microseconds per input event (a stage's total over all connectors), the
median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.corpus import bench_config, ensure_corpus  # noqa: E402

STAGES = ("parse", "route", "filter", "package", "encode")

_CHILD = r"""
import hashlib, json, sys, time
import orjson
from bench.bound import read_lines
from transforms.config import compile_connectors, load_config
from transforms.rules.encode import encode_batch
from transforms.rules.events import event_time_ms, parse_line
from transforms.rules.records import Packaged

config, corpus = sys.argv[1], sys.argv[2]
connectors = compile_connectors(load_config(config))
lines = list(read_lines(corpus))
times = {}
digests = {}

def timed(stage, fn):
    best, out = float("inf"), None
    for _ in range(3):
        started = time.process_time()
        out = fn()
        best = min(best, time.process_time() - started)
    times[stage] = best
    return out

def digest(stage, data):
    digests[stage] = hashlib.sha256(data).hexdigest()

events = timed("parse", lambda: [parse_line(x) for x in lines])
digest("parse", orjson.dumps(events))
routed = timed("route", lambda: [[e for e in events if c.route.matches(e)] for c in connectors])
digest("route", orjson.dumps([[e["event_id"] for e in r] for r in routed]))
filtered = timed(
    "filter", lambda: [[c.filter.apply(e) for e in r] for c, r in zip(connectors, routed)]
)
digest("filter", orjson.dumps(filtered))

def package():
    out = []
    for c, r, f in zip(connectors, routed, filtered):
        apply = c.packager.apply
        out.append([
            Packaged(e["event_id"], event_time_ms(e), e["event"]["type"], apply(x), e)
            for e, x in zip(r, f)
        ])
    return out

packaged = timed("package", package)
digest("package", orjson.dumps([[p.record for p in r] for r in packaged]))

def encode():
    out = []
    for c, items in zip(connectors, packaged):
        size, fmt = c.deliver.batch.max_events, c.deliver.format
        sink_level = getattr(c.deliver, "gzip_level", None)
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            if sink_level is None:
                out.append(encode_batch(batch, fmt))
            else:
                out.append(encode_batch(batch, fmt, gzip_level=sink_level))
    return out

digest("encode", b"".join(timed("encode", encode)))
print("RESULT " + json.dumps({"times": times, "digests": digests, "events": len(lines)}))
"""


def run_child(tree: Path, config: Path, corpus: Path) -> dict[str, Any]:
    """Time the stages in ``tree`` (a child process with that tree first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", _CHILD, str(config), str(corpus)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=env, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the reference source tree")
    parser.add_argument("--after", default=str(ROOT), help="the changed tree (default: this)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--connectors", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    (corpus,) = ensure_corpus(args.events)
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    times: dict[str, dict[str, list[float]]] = {t: {s: [] for s in STAGES} for t in trees}
    with tempfile.TemporaryDirectory(prefix="rules-ab-") as work:
        config = bench_config(args.connectors, Path(work) / "out", Path(work) / "delivery.yaml")
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            digests = {}
            for name in order:
                result = run_child(trees[name], config, corpus)
                digests[name] = result["digests"]
                for stage, seconds in result["times"].items():
                    times[name][stage].append(seconds)
            if digests["before"] != digests["after"]:
                differ = [s for s in STAGES if digests["before"][s] != digests["after"][s]]
                print(f"OUTPUT DIFFERS in stage(s) {differ}", file=sys.stderr)
                return 1
            print(f"round {round_no + 1}: same output in both trees", file=sys.stderr)
    per = 1e6 / args.events
    print(
        f"{args.events:,} events x {args.connectors} connectors, median of {args.rounds} rounds "
        f"(CPU us per input event; load {os.getloadavg()[0]:.2f})\n"
    )
    print("| stage | before | after | change |\n|---|---:|---:|---:|")
    total = {t: 0.0 for t in trees}
    for stage in STAGES:
        before = statistics.median(times["before"][stage]) * per
        after = statistics.median(times["after"][stage]) * per
        total["before"] += before
        total["after"] += after
        print(f"| {stage} | {before:.2f} | {after:.2f} | {after / before - 1:+.0%} |")
    b, a = total["before"], total["after"]
    print(f"| total | {b:.2f} | {a:.2f} | {a / b - 1:+.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
