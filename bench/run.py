"""The backfill benchmark: the job against the plain-Python bound, in the same command.

    python bench/run.py                 # the full table (make bench): 100k and 1M events
    python bench/run.py --quick         # CI-sized: 30k events, 5 connectors, 1 repetition
    python bench/run.py --events 200000 --connectors 5 --repeat 3 --no-write

For every (events, connectors) configuration it runs, each in its own child process:

* ``bound``: ``bench/bound.py`` (one plain loop over the job's own rules, no Beam);
* ``job``: ``python -m beam_pipeline run --config ... --input corpus.jsonl.gz --no-progress``
  (the default configuration: above 8 MB of input it starts a worker process per core,
  which share the one file, each parsing every other chunk; below, Beam's in-process
  FnApiRunner);
* ``job 1p``: the same with ``--direct_num_workers 1``: always one process (the CPU per
  event of the job itself, without worker start-up and contention);
* ``job files``: the same default command over the corpus split into ``--parts`` files
  (4): with several input files larger than 8 MB in all, ``run`` starts a worker process
  per core (each reading whole files) by itself;
* ``job 2w`` (on request): ``--direct_num_workers 2 --direct_running_mode
  multi_processing`` given explicitly, over the split corpus;
* ``job shuffle`` (on request): the default command with the cut a cluster gets
  (``CutBatches(shared_disk=False)``, as on Dataflow or a Flink cluster: the records go
  through the runner's GroupByKey instead of sorted runs on one local disk); the
  FnApiRunner's GroupByKey holds them in the runner's memory, so this measures the
  workers' side of that path (pickling, sorting, cutting), not a cluster's shuffle.

Repetitions interleave the variants (rotating their order), so all of them see the same
background load; figures are medians, and ratios are taken between medians of the same
command. Every run is checked against the bound: the job must deliver exactly the bound's
events per connector (and, on the one-file input, the same number of files and bytes).

Measured per run: wall time (spawn to exit, so start-up is included), input events/s,
CPU seconds (user + system of the child and all its descendants: ``RUSAGE_CHILDREN``
deltas, with this process made a child subreaper so orphaned worker processes are reaped
and counted here too), CPU-seconds per million events, events per CPU-second, peak RSS
(``ru_maxrss``: the largest single process) and the peak of the summed RSS of the whole
process tree (sampled every 0.2 s from /proc; what a machine must hold for multi-worker
runs).

Per connector, from each job run's summary: its objects (``writes``), their events (min,
p50 bucket, max of ``events_per_write``) and bytes, in a second table ("Objects per
connector", the default ``job`` command at the largest events count), so small objects
show.

Results: markdown tables on stdout; with a full run (not ``--quick``, not
``--no-write``) also the generated section of ``bench/RESULTS.md`` and
``bench/baseline.json`` (the reference ratio of the regression check, measured at 30k
events x 5 connectors).

Regression check (``make bench-check``, a few minutes; not part of ``make test``, since a
speed is a measurement, not a test)::

    python bench/run.py --check

measures the job/bound ratio at the recorded configuration now, twice if the first is
low (a burst of load hits one run, not two), and exits 1 when it is below half the ratio
in ``bench/baseline.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.corpus import DEFAULT_SEED, bench_config, ensure_corpus  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
FAILURES = Path(tempfile.gettempdir()) / "telemetry-bench-failures"
"""Where the output and summary of a failed run are kept for inspection."""
FAILED_RUNS: list[str] = []
"""Every failed run of this process, for the report."""
BASELINE = ROOT / "bench" / "baseline.json"
BEGIN = "<!-- bench/run.py: generated section begins -->"
END = "<!-- bench/run.py: generated section ends -->"

REGRESSION = {"events": 30_000, "connectors": 5}
"""The configuration of the CI regression check (and of ``--quick``)."""

VARIANTS = ("bound", "job", "job 1p", "job files", "job 2w", "job shuffle")
DEFAULT_VARIANTS = ("bound", "job", "job 1p", "job files")
SPLIT_VARIANTS = ("job files", "job 2w")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SUBREAPER = False


@dataclass
class Run:
    """One measured child process."""

    variant: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    tree_rss_mib: float
    inner_s: float
    """The run's own elapsed time (summary ``elapsed_s``: without interpreter start-up)."""
    delivered: dict[str, int]
    writes: int
    bytes: int
    load1: float
    failed: str | None = None
    """Why the run failed (exit code and where its output was kept); None when it succeeded."""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per connector, its objects and their sizes (:func:`objects_of`); empty for the bound."""


class RunFailed(RuntimeError):
    """A measured child exited non-zero; ``output`` is the end of its stdout and stderr."""

    def __init__(self, argv: Sequence[str], code: int, output: str):
        super().__init__(f"{' '.join(argv[:6])} ... failed ({code}):\n{output}")
        self.code = code
        self.output = output


@dataclass
class Row:
    """The medians of one variant of one configuration."""

    events: int
    connectors: int
    variant: str
    runs: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    tree_rss_mib: float
    inner_s: float
    deliveries: int
    load1: tuple[float, float]
    failures: int = 0
    ratio_eps: float | None = None
    ratio_cpu: float | None = None
    paired_ratio_eps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per connector, its objects and their sizes, from the first successful run (the
    objects depend on the input and config only, so every run of a variant has the same)."""

    @property
    def events_per_s(self) -> float:
        """Input events per wall-clock second."""
        return self.events / self.wall_s

    @property
    def cpu_s_per_m(self) -> float:
        """CPU-seconds per million input events."""
        return self.cpu_s * 1e6 / self.events

    @property
    def events_per_cpu_s(self) -> float:
        """Input events per CPU-second."""
        return self.events / self.cpu_s


def make_subreaper() -> bool:
    """Become the reaper of orphaned descendants (Linux), so their CPU time is counted.

    Only for a process whose sole children are the measured runs (``main``): afterwards
    :func:`measure` reaps every child it finds, not just the one it started.
    """
    global _SUBREAPER
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _SUBREAPER = bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        _SUBREAPER = False
    return _SUBREAPER


def _proc_table() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, rss bytes)}`` of every process (Linux /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), int(fields[21]) * _PAGE)
    return table


class TreeSampler(threading.Thread):
    """Samples the summed RSS of every descendant of ``root``; keeps the peak."""

    def __init__(self, root: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until :meth:`stop`."""
        while not self._stop_event.is_set():
            table = _proc_table()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            total, todo = 0, list(children.get(self.root, []))
            while todo:
                pid = todo.pop()
                total += table[pid][1]
                todo.extend(children.get(pid, []))
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval_s)

    def stop(self) -> int:
        """Stop sampling; return the peak (bytes)."""
        self._stop_event.set()
        self.join()
        return self.peak


def _reap_orphans(timeout_s: float = 60.0) -> None:
    """Wait for descendants re-parented to this process (subreaper); kill them past timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            me = os.getpid()
            for orphan, (ppid, _) in _proc_table().items():
                if ppid == me:
                    os.kill(orphan, signal.SIGKILL)
        time.sleep(0.05)


def measure(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout_s: float | None = None
) -> tuple[float, float, float, float]:
    """Run a child to completion; return (wall s, CPU s, peak RSS MiB, peak tree RSS MiB).

    CPU is the ``RUSAGE_CHILDREN`` delta: the child and every descendant reaped by it or,
    after :func:`make_subreaper`, by this process. Without a subreaper it is the child's
    own ``wait4`` usage (its reaped descendants included), and the tree RSS covers only
    the child's live descendants. Raises :class:`RunFailed` with the end of its output if
    the child fails, or runs longer than ``timeout_s`` (then its whole process group is
    killed).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=err, stderr=err, start_new_session=True
        )
        sampler = TreeSampler(os.getpid() if _SUBREAPER else proc.pid)
        sampler.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if timer is not None:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if _SUBREAPER:
            _reap_orphans()
        tree_peak = sampler.stop()
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode("utf-8", "replace").splitlines()
            kept = [x for x in lines if "semi_persistent_directory" not in x]
            if timed_out.is_set():
                kept.append(f"(killed after the {timeout_s:.0f} s timeout)")
            raise RunFailed(argv, proc.returncode, "\n".join(kept[-60:]))
    cpu = usage.ru_utime + usage.ru_stime
    if _SUBREAPER:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tree_peak = max(tree_peak, usage.ru_maxrss * 1024)
    return wall, cpu, usage.ru_maxrss / 1024, tree_peak / 2**20


def job_argv(config: Path, inputs: Sequence[Path], workers: int = 1) -> list[str]:
    """The job's command line (default configuration, or ``workers`` processes)."""
    argv = [sys.executable, "-m", "beam_pipeline", "run", "--config", str(config)]
    for path in inputs:
        argv += ["--input", str(path)]
    argv.append("--no-progress")
    if workers > 1:
        argv += [
            "--direct_num_workers",
            str(workers),
            "--direct_running_mode",
            "multi_processing",
        ]
    return argv


SHUFFLE_PATCH = "import beam_pipeline.pipeline as p; p.shares_local_disk = lambda _: False"
"""Makes the batch job build the cut a cluster gets (no shared disk) on any runner."""
SHUFFLE = f"{SHUFFLE_PATCH}; import sys; from beam_pipeline.cli import main; sys.exit(main())"
"""``python -c`` program: the job's command with that cut (``job shuffle``)."""


def bound_argv(config: Path, inputs: Sequence[Path]) -> list[str]:
    """The bound's command line."""
    argv = [sys.executable, str(ROOT / "bench" / "bound.py"), "--config", str(config)]
    for path in inputs:
        argv += ["--input", str(path)]
    return argv


def run_variant(
    variant: str,
    connectors: int,
    single: list[Path],
    parts: list[Path],
    work: Path,
    workers: int,
    timeout_s: float | None = None,
) -> Run:
    """Run one variant once into a fresh output directory (removed afterwards)."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    config = bench_config(connectors, out, out / "delivery.yaml")
    summary = out / "summary.json"
    if variant == "bound":
        argv = bound_argv(config, single)
    elif variant == "job":
        argv = job_argv(config, single)
    elif variant == "job 1p":
        argv = [*job_argv(config, single), "--direct_num_workers", "1"]
    elif variant == "job files":
        argv = job_argv(config, parts)
    elif variant == "job shuffle":
        argv = [sys.executable, "-c", SHUFFLE, *job_argv(config, single)[3:]]
    else:
        argv = job_argv(config, parts, workers)
    argv = [*argv, "--summary-json", str(summary)]
    load1 = os.getloadavg()[0]
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        wall, cpu, rss, tree = measure(argv, env, timeout_s)
        data = json.loads(summary.read_text())
    except RunFailed as exc:
        kept = (
            FAILURES / f"{time.strftime('%Y%m%dT%H%M%S')}-{variant.replace(' ', '')}-{os.getpid()}"
        )
        kept.mkdir(parents=True, exist_ok=True)
        (kept / "output.txt").write_text(" ".join(argv) + "\n\n" + exc.output, encoding="utf-8")
        if summary.exists():
            shutil.copy(summary, kept / "summary.json")
        nan = float("nan")
        why = f"exit {exc.code}, output kept in {kept}"
        FAILED_RUNS.append(f"{variant}, {connectors} connectors, {why}")
        return Run(variant, nan, nan, nan, nan, nan, {}, 0, 0, load1, why)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if variant == "bound":
        rows = data["connectors"]
        delivered = {cid: c["delivered"] for cid, c in rows.items()}
        writes = sum(c["writes"] for c in rows.values())
        nbytes = sum(c["bytes"] for c in rows.values())
    else:
        if not data["balanced"]:
            raise RuntimeError(f"{variant}: the run's counts do not add up: {data}")
        delivered = {c["id"]: c["delivered"] for c in data["connectors"]}
        writes = sum(c["writes"] for c in data["connectors"])
        nbytes = sum(c["bytes"] for c in data["connectors"])
    return Run(
        variant,
        wall,
        cpu,
        rss,
        tree,
        data["elapsed_s"],
        delivered,
        writes,
        nbytes,
        load1,
        objects={} if variant == "bound" else objects_of(data),
    )


def objects_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Objects per connector and their sizes, from a job's ``--summary-json``.

    For example::

        {"archive_0": {"writes": 1000, "bytes": 52000000, "min": 12,
                       "p50_low": 1000, "p50_high": 1000, "max": 1000}}

    ``writes`` counts files (these are file connectors); min, p50 and max are events per
    file (None when it wrote none).
    """
    out = {}
    for c in summary["connectors"]:
        sizes = c.get("events_per_write") or {}
        out[c["id"]] = {
            "writes": c["writes"],
            "bytes": c["bytes"],
            **{k: sizes.get(k) for k in ("min", "p50_low", "p50_high", "max")},
        }
    return out


def check(runs: list[Run]) -> None:
    """Every run delivered what the bound delivered (same files on the same input).

    Raises:
        RuntimeError: naming the variant and the difference.
    """
    ok = [r for r in runs if r.failed is None]
    ref = next((r for r in ok if r.variant == "bound"), None)
    if ref is None:
        raise RuntimeError(f"the bound failed: {runs[0].failed}")
    for r in ok:
        if r.delivered != ref.delivered:
            raise RuntimeError(f"{r.variant} delivered {r.delivered}, the bound {ref.delivered}")
        same_input = r.variant not in SPLIT_VARIANTS
        if same_input and (r.writes, r.bytes) != (ref.writes, ref.bytes):
            raise RuntimeError(
                f"{r.variant} wrote {r.writes} files / {r.bytes} bytes, "
                f"the bound {ref.writes} / {ref.bytes}"
            )


def _median_row(events: int, connectors: int, variant: str, every: list[Run]) -> Row:
    med = statistics.median
    runs = [r for r in every if r.failed is None]
    if not runs:
        raise RuntimeError(f"every {variant} run failed: {every[0].failed}")
    return Row(
        events=events,
        connectors=connectors,
        variant=variant,
        runs=len(runs),
        wall_s=med(r.wall_s for r in runs),
        cpu_s=med(r.cpu_s for r in runs),
        peak_rss_mib=med(r.peak_rss_mib for r in runs),
        tree_rss_mib=med(r.tree_rss_mib for r in runs),
        inner_s=med(r.inner_s for r in runs),
        deliveries=sum(runs[0].delivered.values()),
        load1=(min(r.load1 for r in every), max(r.load1 for r in every)),
        failures=len(every) - len(runs),
        objects=runs[0].objects,
    )


def bench_config_rows(
    events: int,
    connectors: int,
    variants: Sequence[str],
    repeat: int,
    work: Path,
    seed: int,
    parts: int,
    workers: int,
    log: Any = sys.stderr,
    cache: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
) -> list[Row]:
    """Measure one configuration: ``repeat`` interleaved rounds of every variant.

    ``cache`` is the corpus cache directory (default: see :func:`bench.corpus.cache_dir`).
    """
    single = ensure_corpus(events, seed, folder=cache)
    split = ensure_corpus(events, seed, parts, cache) if set(SPLIT_VARIANTS) & set(variants) else []
    per: dict[str, list[Run]] = {v: [] for v in variants}
    for rep in range(repeat):
        order = list(variants[rep % len(variants) :]) + list(variants[: rep % len(variants)])
        runs = []
        for variant in order:
            run = run_variant(variant, connectors, single, split, work, workers, timeout_s)
            runs.append(run)
            per[variant].append(run)
            print(
                f"  {events:>9,} ev x {connectors:>2} conn  {variant:<7} rep {rep + 1}: "
                + (
                    f"FAILED ({run.failed})"
                    if run.failed
                    else f"{run.wall_s:6.1f} s wall, {run.cpu_s:6.1f} CPU s, "
                    f"{run.peak_rss_mib:5.0f} MiB, load {run.load1:.2f}"
                ),
                file=log,
                flush=True,
            )
        check(runs)
    rows = [_median_row(events, connectors, v, per[v]) for v in variants]
    bound = next((r for r in rows if r.variant == "bound"), None)
    if bound is not None:
        for row in rows:
            row.ratio_eps = bound.wall_s / row.wall_s
            row.ratio_cpu = row.cpu_s / bound.cpu_s
            paired = [
                b.wall_s / j.wall_s
                for b, j in zip(per["bound"], per[row.variant], strict=True)
                if b.failed is None and j.failed is None
            ]
            row.paired_ratio_eps = statistics.median(paired) if paired else None
    return rows


def table(rows: Sequence[Row]) -> str:
    """The results as a markdown table."""
    out = [
        "| events | conn | deliveries | variant | wall s | run s | events/s | CPU s "
        "| CPU-s / M events | events / CPU-s | peak RSS MiB | tree RSS MiB "
        "| job/bound events/s | job/bound CPU | load (1 min) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = "" if r.variant == "bound" or r.ratio_eps is None else f"**{r.ratio_eps:.2f}**"
        cpu = "" if r.variant == "bound" or r.ratio_cpu is None else f"{r.ratio_cpu:.2f}"
        variant = r.variant + (f" ({r.failures} of {r.runs} runs FAILED)" if r.failures else "")
        out.append(
            f"| {r.events:,} | {r.connectors} | {r.deliveries:,} | {variant} "
            f"| {r.wall_s:.1f} | {r.inner_s:.1f} | {r.events_per_s:,.0f} | {r.cpu_s:.1f} "
            f"| {r.cpu_s_per_m:.1f} | {r.events_per_cpu_s:,.0f} | {r.peak_rss_mib:.0f} "
            f"| {r.tree_rss_mib:.0f} | {ratio} | {cpu} | {r.load1[0]:.1f}-{r.load1[1]:.1f} |"
        )
    return "\n".join(out)


def objects_table(rows: Sequence[Row]) -> str:
    """Objects per connector and their sizes (events per object, bytes), as a markdown table."""
    out = [
        "| events | conn | connector | objects | events/object min | p50 | max | bytes "
        "| bytes/object |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    for r in rows:
        for cid, o in r.objects.items():
            low, high = o["p50_low"], o["p50_high"]
            p50 = shown(low) if low == high else f"{low}-{high}"
            mean = f"{o['bytes'] / o['writes']:,.0f}" if o["writes"] else "-"
            out.append(
                f"| {r.events:,} | {r.connectors} | {cid} | {o['writes']:,} | {shown(o['min'])} "
                f"| {p50} | {shown(o['max'])} | {o['bytes']:,} | {mean} |"
            )
    return "\n".join(out)


def objects_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows whose objects are shown: the default ``job`` at the largest events count."""
    shown = [r for r in rows if r.objects]
    if not shown:
        return []
    largest = max(r.events for r in shown)
    variant = "job" if any(r.variant == "job" for r in shown) else shown[0].variant
    return [r for r in shown if r.events == largest and r.variant == variant]


def memory_table(rows: Sequence[Row]) -> str:
    """Peak RSS of the largest events count against the smallest, per connectors and variant."""
    sizes = sorted({r.events for r in rows})
    if len(sizes) < 2:
        return "(one events count only: no memory scaling to report)"
    small, large = sizes[0], sizes[-1]
    by = {(r.events, r.connectors, r.variant): r for r in rows}
    out = [
        f"| conn | variant | peak RSS MiB at {small:,} | at {large:,} | ratio "
        f"| tree RSS MiB at {small:,} | at {large:,} | ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (events, conn, variant), r in by.items():
        if events != small or (large, conn, variant) not in by:
            continue
        big = by[(large, conn, variant)]
        out.append(
            f"| {conn} | {variant} | {r.peak_rss_mib:.0f} | {big.peak_rss_mib:.0f} "
            f"| {big.peak_rss_mib / r.peak_rss_mib:.2f} | {r.tree_rss_mib:.0f} "
            f"| {big.tree_rss_mib:.0f} | {big.tree_rss_mib / r.tree_rss_mib:.2f} |"
        )
    return "\n".join(out)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "transforms", "beam_pipeline", "bench")
    commit = git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in {len(dirty.splitlines())} file(s)" if dirty else ""
    )
    return {
        # A copy outside the repository (no .git) can name its code itself.
        "commit": os.environ.get("TELEMETRY_BENCH_CODE") or commit or "unknown",
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory_gib": f"{os.sysconf('SC_PHYS_PAGES') * _PAGE / 2**30:.1f}",
        "python": platform.python_version(),
        "beam": version("apache-beam"),
        "platform": platform.platform(),
    }


def report(
    rows: Sequence[Row], args: argparse.Namespace, command: str, started: str, load: list[str]
) -> str:
    """The generated section of RESULTS.md."""
    m = machine()
    lines = [
        BEGIN,
        f"## Latest run: {started}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Python {m['python']}, Apache Beam {m['beam']}, {m['platform']}. "
        f"Code: commit {m['commit']} (transforms/, beam_pipeline/, bench/).",
        "",
        "Load (`uptime`) before and after: " + " / ".join(f"`{x}`" for x in load) + ". The "
        "machine is shared with other engineers' test runs, so absolute figures move with "
        "their load; ratios compare runs interleaved in this one command.",
        "",
        f"Corpus: `examples.generate_events.generate(N, seed={args.seed})`, gzip JSON lines; "
        f"configs: `bench/corpus.py` (1, 5, 20 file connectors); `job` is the default "
        "command on the one-file corpus (above 8 MB it starts a worker process per core, "
        "which share the file), `job 1p` the same in one process (`--direct_num_workers 1`), "
        f"`job files` the default command on the corpus split into {args.parts} files, "
        f"`job 2w` asks for {args.workers} workers. Medians of "
        f"{args.repeat} interleaved repetition(s). `run s` is the run's own elapsed time "
        "(without interpreter start-up and imports); `wall s` is spawn to exit; events/s "
        "count input events over wall time; ratios are bound wall / job wall (events/s) and "
        "job CPU / bound CPU.",
        "",
        "### Throughput and CPU",
        "",
        table(rows),
        "",
        "### Objects per connector",
        "",
        "Objects each connector wrote and their events (min, p50 as the bounds of its "
        "histogram bucket, max) and bytes, from the run summary (`events_per_write`) of the "
        "default `job` command at the largest events count.",
        "",
        objects_table(objects_rows(rows)),
        "",
        "### Memory (peak RSS)",
        "",
        f"{min(args.events):,} vs {max(args.events):,} events (not 1M vs 10M: on 2 shared cores "
        "10M events x 3 variants x repetitions takes too long for one benchmark command).",
        "",
        memory_table([r for r in rows if r.events in (min(args.events), max(args.events))]),
        "",
        "### Failed runs",
        "",
        "\n".join(f"- {f}" for f in FAILED_RUNS) or "None.",
        END,
    ]
    return "\n".join(lines)


def write_results(section: str) -> None:
    """Replace the generated section of RESULTS.md, keeping everything around it."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = (text or "# Benchmark results\n\n") + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def write_baseline(rows: Sequence[Row], command: str, started: str) -> None:
    """Record the regression configuration's ratio (and the whole table, for reference)."""
    reg = next(
        r
        for r in rows
        if r.events == REGRESSION["events"]
        and r.connectors == REGRESSION["connectors"]
        and r.variant == "job"
    )
    data = {
        "measured_at": started,
        "command": command,
        "machine": machine(),
        "regression": {
            **REGRESSION,
            "seed": DEFAULT_SEED,
            "variant": "job",
            "ratio_eps": round(reg.ratio_eps or 0.0, 4),
            "paired_ratio_eps": round(reg.paired_ratio_eps or 0.0, 4),
            "job_events_per_s": round(reg.events_per_s),
        },
        "rows": [
            {
                **{k: v for k, v in asdict(r).items() if k not in ("extra", "objects")},
                "events_per_s": round(r.events_per_s),
                "events_per_cpu_s": round(r.events_per_cpu_s),
            }
            for r in rows
        ],
    }
    BASELINE.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def check_regression(work: Path) -> int:
    """Exit code of the regression check: 0 when the job/bound ratio has not collapsed."""
    if not BASELINE.exists():
        print(f"{BASELINE} is missing: run `make bench` to record it", file=sys.stderr)
        return 2
    recorded = json.loads(BASELINE.read_text())
    ref = recorded["regression"]
    floor = ref["ratio_eps"] / 2

    def measure() -> float:
        rows = bench_config_rows(
            ref["events"],
            ref["connectors"],
            ["bound", "job"],
            repeat=1,
            work=work,
            seed=ref["seed"],
            parts=1,
            workers=1,
            cache=work / "cache",
            timeout_s=600,
        )
        job = next(r for r in rows if r.variant == "job")
        return job.ratio_eps or 0.0

    ratio = measure()
    if ratio < floor:
        ratio = max(ratio, measure())
    verdict = "OK" if ratio >= floor else "REGRESSION"
    print(
        f"{verdict}: job/bound throughput ratio {ratio:.2f}, floor {floor:.2f} (half of "
        f"{ref['ratio_eps']:.2f} recorded {recorded.get('measured_at', '?')}); {_uptime()}"
    )
    return 0 if ratio >= floor else 1


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30k events, 5 connectors, once")
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--connectors", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--parts", type=int, default=4, help="files of the split corpus")
    parser.add_argument("--workers", type=int, default=2, help="processes of `job 2w`")
    parser.add_argument("--no-regression", action="store_true", help="skip the 30k x 5 row")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--work-dir", default=None, help="where outputs go (default: a temp dir)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds before a run is killed (failed)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only the regression check against baseline.json"
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp:
            return check_regression(Path(tmp))
    if args.quick:
        args.events, args.connectors, args.repeat = [REGRESSION["events"]], [5], 1
        args.no_regression = True
    if "bound" not in args.variants:
        args.variants.insert(0, "bound")
    configs = [(n, k) for n in args.events for k in args.connectors]
    if not args.no_regression and (REGRESSION["events"], REGRESSION["connectors"]) not in configs:
        configs.insert(0, (REGRESSION["events"], REGRESSION["connectors"]))
    command = " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if not make_subreaper():
        print("warning: not a subreaper; orphaned workers' CPU may be missed", file=sys.stderr)
    load = [_uptime()]
    print(f"{started}  {load[0]}", file=sys.stderr)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="telemetry-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        for events, connectors in configs:
            rows += bench_config_rows(
                events,
                connectors,
                args.variants,
                args.repeat,
                work,
                args.seed,
                args.parts,
                args.workers,
                timeout_s=args.timeout,
            )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    load.append(_uptime())
    print(f"\n{table(rows)}\n")
    if objects_rows(rows):
        print(f"{objects_table(objects_rows(rows))}\n")
    if len({r.events for r in rows}) > 1:
        print(memory_table([r for r in rows if r.events in (min(args.events), max(args.events))]))
    for failure in FAILED_RUNS:
        print(f"FAILED: {failure}")
    print(f"\nload before / after: {load[0]} / {load[1]}")
    if not args.quick and not args.no_write:
        write_results(report(rows, args, command, started, load))
        write_baseline(rows, command, started)
        print(f"wrote {RESULTS.relative_to(ROOT)} and {BASELINE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
