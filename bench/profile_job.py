"""Profile the job (or the bound) in-process with cProfile, every thread included.

    python bench/profile_job.py [--events 200000] [--connectors 5] [--bound] [--top 40]
        [--out /tmp/job.prof]

The default runner, Beam's FnApiRunner, runs the whole pipeline in the calling process,
so ``cProfile`` sees the DoFns. ``cProfile.run`` alone profiles only the calling thread,
though, and Deliver writes batches (encode, gzip, file write) on a thread pool: this
script gives every thread started during the run its own profiler
(``threading.setprofile``) and merges them, so the files' encoding shows up too. Each
profiler measures its thread's CPU time (``time.thread_time``), not wall time: with
several threads, wall-clock profiles charge GIL waits and idle queue waits to whatever
released the GIL (``stat``, ``zlib``), which hides where the CPU goes. The CPU clock costs
a system call per profiled call, so cheap, frequent calls look dearer than they are: use
the shares to rank, not the seconds (a sampling profiler such as py-spy has no such
bias; see bench/RESULTS.md for both).

Prints the top functions by own time and by cumulative time; writes the merged stats to
``--out`` for ``python -m pstats`` or snakeviz.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.corpus import bench_config, ensure_corpus  # noqa: E402


class ThreadProfiles:
    """One cProfile per thread started while active, plus the calling thread's."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._hook)
        main = cProfile.Profile(time.thread_time)
        self.profiles.append(main)
        main.enable()
        return self

    def __exit__(self, *_: Any) -> None:
        self.profiles[0].disable()
        threading.setprofile(None)

    def stats(self) -> pstats.Stats:
        """All threads' stats merged."""
        merged = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            try:
                merged.add(profile)
            except TypeError:  # a thread that never ran a profiled call
                continue
        return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--connectors", type=int, default=5)
    parser.add_argument("--bound", action="store_true", help="profile the bound instead")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default=None, help="where to write the merged pstats")
    args = parser.parse_args(argv)

    (corpus,) = ensure_corpus(args.events)
    work = Path(tempfile.mkdtemp(prefix="telemetry-profile-"))
    config = bench_config(args.connectors, work / "out", work / "delivery.yaml")
    started = time.perf_counter()
    try:
        if args.bound:
            from bench.bound import run_bound

            with ThreadProfiles() as profiles:
                run_bound(str(config), [str(corpus)])
        else:
            from beam_pipeline.cli import main as cli_main

            run = ["run", "--config", str(config), "--input", str(corpus), "--no-progress"]
            with ThreadProfiles() as profiles:
                code = cli_main(run)
            if code != 0:
                raise SystemExit(f"the job failed with exit code {code}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    stats = profiles.stats()
    what = "bound" if args.bound else "job"
    print(
        f"\n{what}: {args.events:,} events x {args.connectors} connectors, "
        f"{elapsed:.1f} s under the profiler, {len(profiles.profiles)} thread profile(s)"
    )
    if args.out:
        stats.dump_stats(args.out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
