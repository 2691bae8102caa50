"""Backfill engines: the same batch command on the FnApiRunner default and on Prism.

    python bench/backfill_engines.py [--events 200000] [--rounds 3]

Runs ``python -m beam_pipeline run --config examples/delivery.yaml --input FILE
--no-progress --summary-json ...`` on one corpus of ``--events`` events
(:func:`examples.generate_events.generate`, gzip level 1, cached in
``/tmp/backfill-engines``), interleaved within each round on three engines:

* ``fnapi``: no ``--runner`` (Beam's FnApiRunner; a worker process per core above 8 MB);
* ``fnapi-1``: the same with ``--direct_num_workers 1`` (one process);
* ``prism``: ``--runner PrismRunner --prism_location <scripts/fetch_prism.py>
  --environment_type LOOPBACK``.

Each run has its own working directory (the config writes to ``./out``). Wall time is
measured around ``subprocess.run``; CPU is the ``getrusage(RUSAGE_CHILDREN)`` user+sys
delta, which counts every descendant the job process reaped (Prism, worker processes). As
a check, a sampler reads ``/proc`` every 0.2 s and reports the CPU last seen in the job's
descendants ("helpers"). Every run's summary must be balanced and its output tree equal
to the first run's (same file names and bytes, or at least the same records per
connector). Prints a markdown table with Prism / FnApiRunner ratios within each round.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/backfill-engines")
TICK = os.sysconf("SC_CLK_TCK")


def ensure_corpus(events: int) -> Path:
    """The corpus of ``events`` events (seed 42, gzip level 1), generated once."""
    path = WORK / f"events-{events}.jsonl.gz"
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT))
    from examples.generate_events import generate

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with gzip.open(tmp, "wb", compresslevel=1) as out:
        block: list[bytes] = []
        for line in generate(events):
            block.append(line)
            if len(block) == 4096:
                out.write(b"\n".join(block) + b"\n")
                block = []
        if block:
            out.write(b"\n".join(block) + b"\n")
    os.replace(tmp, path)
    return path


def _proc_table() -> dict[int, tuple[int, float]]:
    """Every process's (parent pid, user+sys CPU seconds) from /proc."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # the process ended between listdir and read
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces and parens
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


class TreeSampler:
    """The CPU last seen in each descendant of ``pid`` (sampled: a lower bound)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seen: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.2):
            table = _proc_table()
            tree = {self.pid}
            grew = True
            while grew:
                grew = False
                for pid, (ppid, _) in table.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            for pid in tree - {self.pid}:
                if pid in table:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), table[pid][1])

    def stop(self) -> float:
        """Stop sampling; the sum of the CPU seconds last seen per descendant."""
        self.done.set()
        self.thread.join()
        return sum(self.seen.values())


def run_once(engine: str, corpus: Path, prism: str, folder: Path) -> dict[str, float | bool]:
    """Run the job once on ``engine`` in ``folder``; wall, CPU and the summary's balance."""
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    summary = folder / "summary.json"
    command = [
        sys.executable,
        "-m",
        "beam_pipeline",
        "run",
        "--config",
        str(ROOT / "examples" / "delivery.yaml"),
        "--input",
        str(corpus),
        "--no-progress",
        "--summary-json",
        str(summary),
    ]
    if engine == "fnapi-1":
        command += ["--direct_num_workers", "1"]
    elif engine == "prism":
        command += [
            "--runner",
            "PrismRunner",
            "--prism_location",
            prism,
            "--environment_type",
            "LOOPBACK",
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(folder / "log.txt", "wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log)
        sampler = TreeSampler(process.pid)
        code = process.wait()
    wall = time.monotonic() - started
    helpers = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    balanced = False
    if summary.exists():
        balanced = bool(json.loads(summary.read_text())["balanced"])
    if code != 0:
        print(f"{engine}: exit {code}, see {folder / 'log.txt'}", file=sys.stderr)
    return {"wall": wall, "cpu": cpu, "helpers": helpers, "balanced": balanced, "ok": code == 0}


def tree_digest(out: Path) -> dict[str, str]:
    """Each output file's path (relative to ``out``) and SHA-256."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def records(out: Path) -> Counter[tuple[str, str]]:
    """Every delivered record as (top folder, canonical JSON), whatever the file layout."""
    found: Counter[tuple[str, str]] = Counter()
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        top = path.relative_to(out).parts[0]
        text = data.decode("utf-8").strip()
        if text.startswith("["):
            items = json.loads(text)
        else:
            items = [json.loads(line) for line in text.splitlines() if line]
        found.update((top, json.dumps(item, sort_keys=True)) for item in items)
    return found


def compare(reference: Path, other: Path) -> str:
    """``identical`` (same files and bytes), ``same records`` (other layout) or ``DIFFERENT``."""
    if tree_digest(reference) == tree_digest(other):
        return "identical"
    if records(reference) == records(other):
        return "same records"
    return "DIFFERENT"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--engines", default="fnapi,fnapi-1,prism", help="comma-separated, run in this order"
    )
    args = parser.parse_args()
    corpus = ensure_corpus(args.events)
    prism = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_prism.py")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split()[-1]
    engines = args.engines.split(",")
    size = corpus.stat().st_size / 2**20
    print(f"{args.events:,} events, {size:.1f} MiB gzipped, {os.cpu_count()} cores")
    print()
    print("| round | engine | wall s | CPU s | helpers CPU s (sampled) | balanced | output |")
    print("|---|---|---|---|---|---|---|")
    reference: Path | None = None
    ratios: list[str] = []
    for round_ in range(1, args.rounds + 1):
        results = {}
        for engine in engines:
            folder = WORK / f"run-{args.events}-{engine}-{round_}"
            result = run_once(engine, corpus, prism, folder)
            results[engine] = result
            if reference is None:
                reference, same = folder / "out", "reference"
            else:
                same = compare(reference, folder / "out")
            print(
                f"| {round_} | {engine} | {result['wall']:.1f} | {result['cpu']:.1f} | "
                f"{result['helpers']:.1f} | {'yes' if result['balanced'] else 'NO'} | {same} |",
                flush=True,
            )
        if "prism" in results:
            for base in ("fnapi", "fnapi-1"):
                if base in results:
                    p, b = results["prism"], results[base]
                    ratios.append(
                        f"| {round_} | prism / {base} | {p['wall'] / b['wall']:.2f} | "
                        f"{p['cpu'] / b['cpu']:.2f} |"
                    )
    if ratios:
        print()
        print("| round | ratio | wall | CPU |")
        print("|---|---|---|---|")
        print("\n".join(ratios))


if __name__ == "__main__":
    main()
