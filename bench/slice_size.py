"""CPU per event of the rules by slice size: why Parse hands chunks on in slices.

    python bench/slice_size.py [--config bench/agent_like.yaml] [--events 100000]
        [--sizes 5000 1000 250 50] [--repeat 3] [--no-gc]

Runs the job's per-event work (``parse_line``, then per connector ``RouteRule.matches``,
``FieldFilter.apply``, ``Packager.apply``, ``Packaged`` and ``encode.dumps``) stage by
stage over slices of N events, the way the fused Beam stages do with a chunk, for each N,
in one process with the job's garbage-collector settings (``--no-gc``: collector off).
The work is the same for every N; only how many events each stage pass walks differs.
Prints the best CPU microseconds per input event for each N.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bound import read_lines  # noqa: E402
from bench.corpus import ensure_corpus  # noqa: E402
from transforms.config import compile_connectors, load_config  # noqa: E402
from transforms.rules.encode import dumps  # noqa: E402
from transforms.rules.events import event_time_ms, parse_line  # noqa: E402
from transforms.rules.records import DeadLetter, Packaged  # noqa: E402
from transforms.runtime import tune_gc  # noqa: E402


def run(lines: list[bytes], config: str, size: int) -> float:
    """CPU seconds for the whole corpus in slices of ``size`` events."""
    connectors = compile_connectors(load_config(config))
    started = time.process_time()
    for start in range(0, len(lines), size):
        parsed = [parse_line(x) for x in lines[start : start + size]]
        events = [e for e in parsed if not isinstance(e, DeadLetter)]
        for c in connectors:
            routed = [e for e in events if c.route.matches(e)]
            filtered = [(e, c.filter.apply(e)) for e in routed]
            apply = c.packager.apply
            packaged = [
                Packaged(e["event_id"], event_time_ms(e), e["event"]["type"], apply(f), e)
                for e, f in filtered
            ]
            [dumps(p.record) for p in packaged]
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "bench" / "agent_like.yaml"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 1000, 250, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-gc", action="store_true", help="switch the collector off")
    args = parser.parse_args(argv)
    (corpus,) = ensure_corpus(args.events)
    lines = list(read_lines(str(corpus)))
    tune_gc()
    if args.no_gc:
        gc.disable()
    best = {size: float("inf") for size in args.sizes}
    for _ in range(args.repeat):
        for size in args.sizes:
            best[size] = min(best[size], run(lines, args.config, size))
    print(f"{len(lines):,} events, {Path(args.config).name}, best of {args.repeat}\n")
    print("| events per slice | CPU us / event |\n|---:|---:|")
    for size, cpu in best.items():
        print(f"| {size:,} | {cpu * 1e6 / len(lines):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
