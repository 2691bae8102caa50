"""What the garbage collector costs the job: CPU inside collections, per generation.

    python bench/gc_cost.py --events 1000000 --connectors 5 [--young 700]

Runs the default command in this process (``beam_pipeline.cli.main``, FnApiRunner) on a
bench corpus and config (``bench/corpus.py``) and times every collection with
``gc.callbacks`` (CPU clock). ``--young`` overrides the young-generation threshold the job
sets (``transforms.runtime.GC_YOUNG_THRESHOLD``; CPython's default is 700), so both can be
compared on the same corpus: ``--young 700`` is the collector as CPython ships it.
Prints the collections per generation, the CPU spent in them and the run's whole CPU.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import DEFAULT_SEED, bench_config, ensure_corpus  # noqa: E402
from transforms import runtime  # noqa: E402


class CollectorClock:
    """Counts collections per generation and the CPU seconds spent inside them."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` hook: called at the start and the stop of each collection."""
        if phase == "start":
            self._start = time.process_time()
        else:
            self.cpu += time.process_time() - self._start
            self.collections[info["generation"]] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--connectors", type=int, default=5)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--young", type=int, default=None, help="young-generation threshold (default: the job's)"
    )
    args = parser.parse_args(argv)
    if args.young is not None:
        runtime.GC_YOUNG_THRESHOLD = args.young
    from beam_pipeline.cli import main as job_main

    corpus = ensure_corpus(args.events, args.seed)[0]
    clock = CollectorClock()
    with tempfile.TemporaryDirectory(prefix="gc-cost-") as tmp:
        config = bench_config(args.connectors, Path(tmp) / "out", Path(tmp) / "delivery.yaml")
        gc.callbacks.append(clock)
        start = time.process_time()
        try:
            code = job_main(
                ["run", "--config", str(config), "--input", str(corpus), "--no-progress"]
            )
        finally:
            gc.callbacks.remove(clock)
        cpu = time.process_time() - start
    print(
        f"young threshold {gc.get_threshold()[0]:,}: {clock.collections} collections"
        f" (young, middle, full), {clock.cpu:.2f} CPU-s in them, {cpu:.1f} CPU-s in all"
        f" ({args.events / cpu:,.0f} events per CPU-second), exit {code}"
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
