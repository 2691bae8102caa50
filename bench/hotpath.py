"""Micro-benchmarks behind the hot-path suggestions in bench/RESULTS.md.

    python bench/hotpath.py [--events 20000] [--cases encode gzip route gc]

Each case times a function of the project against a candidate replacement written here,
on the benchmark's own events and connectors (bench/corpus.py, 5 connectors), and checks
that both give the same output (except ``gzip``, whose level changes the bytes). Nothing
in the project is edited: candidates are local functions or in-memory patches. Times are
the best of 5 runs (``time.perf_counter``), so they show the cost of the code, not of the
machine's other load.

Cases:

* ``encode``: ``encode_batch(..., "ndjson")`` against one ``orjson.dumps`` per record with
  ``OPT_APPEND_NEWLINE`` and a single U+2028/U+2029 check on the joined bytes.
* ``gzip``: ``gzip.compress`` of an ndjson batch at level 6 (now) against 1 and 3.
* ``route``: every connector's :meth:`RouteRule.matches` over every event of a chunk,
  against bucketing the chunk's events by type once and testing only the types a
  connector lists (same events, same order).
* ``gc``: the whole job in-process (child process) on ``--gc-events``, timing the cyclic
  garbage collector per generation, as is and with ``gc.freeze()`` after the imports.

The ``filter``, ``member`` and ``iso`` candidates of earlier sessions are now the
project's code; ``bench/rules_ab.py`` compares the rules of two source trees stage by
stage (and checks they produce the same output).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bound import read_lines  # noqa: E402
from bench.corpus import bench_config, ensure_corpus  # noqa: E402
from transforms.config import compile_connectors, load_config  # noqa: E402
from transforms.rules.encode import encode_batch  # noqa: E402
from transforms.rules.events import parse_line  # noqa: E402

CASES = ("encode", "gzip", "route", "gc")


def best_of(fn: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    """The fastest of ``runs`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def report(case: str, what: str, now_s: float, new_s: float, per: int, note: str = "") -> str:
    """One table row: current vs candidate, per item and the saving."""
    return (
        f"| {case} | {what} | {now_s * 1e6 / per:.2f} | {new_s * 1e6 / per:.2f} "
        f"| {1 - new_s / now_s:+.0%} | {note} |"
    )


def _ndjson_candidate(records: list[Any]) -> bytes:
    data = b"".join([orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records])
    if b"\xe2\x80" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return data


def case_encode(records: list[Any]) -> list[str]:
    batches = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    now_s, expected = best_of(lambda: [encode_batch(b, "ndjson") for b in batches])
    new_s, got = best_of(lambda: [_ndjson_candidate(b) for b in batches])
    assert got == expected, "candidate ndjson bytes differ"
    return [report("encode", "ndjson, 1,000 records/batch", now_s, new_s, len(records))]


def case_gzip(records: list[Any]) -> list[str]:
    data = [encode_batch(records[i : i + 1000], "ndjson") for i in range(0, len(records), 1000)]
    now_s, now = best_of(lambda: [gzip.compress(d, 6, mtime=0) for d in data])
    rows = []
    for level in (1, 3):

        def run(level: int = level) -> list[bytes]:
            return [gzip.compress(d, level, mtime=0) for d in data]

        new_s, new = best_of(run)
        size = sum(map(len, new)) / sum(map(len, now))
        rows.append(
            report("gzip", f"level 6 -> {level}", now_s, new_s, len(records), f"size x{size:.2f}")
        )
    return rows


def case_route(events: list[dict[str, Any]], connectors: list[Any]) -> list[str]:
    chunks = [events[i : i + 5000] for i in range(0, len(events), 5000)]

    def now() -> list[list[Any]]:
        return [[e for e in chunk if c.route.matches(e)] for chunk in chunks for c in connectors]

    def new() -> list[list[Any]]:
        out = []
        for chunk in chunks:
            by_type: dict[str, list[int]] = {}
            for i, e in enumerate(chunk):
                by_type.setdefault(e["event"]["type"], []).append(i)
            for c in connectors:
                rule = c.route
                if rule.events:
                    wanted = sorted(
                        i
                        for t in rule.events
                        if t not in rule.exclude_events
                        for i in by_type.get(t, ())
                    )
                    out.append([chunk[i] for i in wanted if rule.matches(chunk[i])])
                else:
                    out.append([e for e in chunk if rule.matches(e)])
        return out

    now_s, expected = best_of(now)
    new_s, got = best_of(new)
    assert got == expected, "bucketed routing differs"
    return [report("route", f"{len(connectors)} connectors", now_s, new_s, len(events))]


_GC_CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
import apache_beam, beam_pipeline.pipeline
from beam_pipeline.cli import main
if sys.argv[4] == "freeze":
    gc.freeze()
stats = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
start = [0.0]
def cb(phase, info):
    if phase == "start":
        start[0] = time.perf_counter()
    else:
        s = stats[info["generation"]]; s[0] += 1; s[1] += time.perf_counter() - start[0]
gc.callbacks.append(cb)
t = time.process_time()
code = main(["run", "--config", sys.argv[2], "--input", sys.argv[3], "--no-progress"])
cpu = time.process_time() - t
gc.callbacks.remove(cb)
print("RESULT", json.dumps({"code": code, "cpu": cpu, "gc": stats}))
"""


def case_gc(events: int, work: Path) -> list[str]:
    (corpus,) = ensure_corpus(events)
    out: dict[str, Any] = {}
    for mode in ("as is", "freeze"):
        folder = work / mode.replace(" ", "_")
        config = bench_config(5, folder, folder / "delivery.yaml")
        argv = [sys.executable, "-c", _GC_CHILD, str(ROOT), str(config), str(corpus), mode]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
        out[mode] = json.loads(line.split(" ", 1)[1])
        shutil.rmtree(folder, ignore_errors=True)
    rows = [
        "",
        f"gc: the job in-process on {events:,} events x 5 connectors (run only, imports done)",
        "",
        "| gc | run CPU s | time in GC s | collections (count x seconds) | exit |",
        "|---|---:|---:|---|---:|",
    ]
    for mode, r in out.items():
        gc_s = sum(s for _, s in r["gc"].values())
        gens = ", ".join(f"gen{g}: {n} x {s:.2f} s" for g, (n, s) in r["gc"].items())
        rows.append(f"| {mode} | {r['cpu']:.1f} | {gc_s:.2f} | {gens} | {r['code']} |")
    saving = 1 - out["freeze"]["cpu"] / out["as is"]["cpu"]
    rows.append(f"| freeze vs as is | {saving:+.0%} | | | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--gc-events", type=int, default=200_000)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    args = parser.parse_args(argv)
    (corpus,) = ensure_corpus(args.events)
    work = Path(tempfile.mkdtemp(prefix="hotpath-"))
    try:
        config = bench_config(5, work / "out", work / "delivery.yaml")
        connectors = compile_connectors(load_config(str(config)))
        events = [e for e in map(parse_line, read_lines(str(corpus))) if isinstance(e, dict)]
        archive = connectors[0]  # every event, no filter, no template: the raw record
        records = [archive.packager.apply(archive.filter.apply(e)) for e in events]
        print(
            f"{len(events):,} events; best of 5; "
            f"load {os.getloadavg()[0]:.2f}\n\n"
            "| case | what | now us/item | candidate us/item | change | note |\n"
            "|---|---|---:|---:|---:|---|"
        )
        for case in args.cases:
            if case == "encode":
                rows = case_encode(records)
            elif case == "gzip":
                rows = case_gzip(records)
            elif case == "route":
                rows = case_route(events, connectors)
            else:
                rows = case_gc(args.gc_events, work)
            print("\n".join(rows), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"events": len(events), "load_after": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
