"""A small, scripted mutation check: does the test suite notice when a promise breaks?

Each :class:`Mutant` below is one deliberate bug on a path that matters (a filter that
lets a denied field through, a lost create-only precondition, a retry schedule cut
short...): a file, an exact piece of its text, what to put instead, and the few test
files that must catch it. The script copies the project's files (``git ls-files``:
tracked and untracked-but-not-ignored, as they are in the working tree) into a
temporary directory, runs those tests once on the unchanged copy (the baseline), then
applies one mutant at a time to the copy and runs its tests with ``pytest -x``::

    python scripts/mutants.py                 # all mutants (a few minutes)
    python scripts/mutants.py --list          # names, files, tests
    python scripts/mutants.py --only gcs_if_generation_match_removed --only hash_ignores_key

A mutant is *killed* when a test fails, and *survives* when its tests pass: a weak
oracle, a test that would not notice the bug. Exit code 0 when every mutant is killed,
1 when any survives (each named, with what it breaks), 2 when the check cannot run (a
mutant whose text is no longer in its file, an unknown ``--only`` name, imports that do
not come from the copy).

The working tree is never touched: tests run with the copy as working directory and
first on ``PYTHONPATH``, and every run starts with a check that ``transforms``,
``beam_pipeline``, ``templates`` and ``tests`` are imported from the copy. A test that
already fails on the baseline cannot tell a mutant apart: it is deselected (and listed)
so that it never counts as a kill. See docs/mutants.md for how to add a mutant.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ROOT / ".venv" / "bin" / "pytest"
TIMEOUT_S = 600
"""Longest run for one mutant; a run that takes longer (a hang) counts as killed."""


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug and the tests that must catch it.

    ``old`` must occur exactly once in ``file`` (so a refactor that moves the code makes
    the mutant fail loudly instead of silently testing nothing). ``tests`` are pytest
    arguments: files or node ids (``tests/test_x.py::test_y[s3]``), chosen to be the few
    that should kill this mutant, not the whole suite. ``expected_killer`` marks a mutant
    that survives today and names the work expected to kill it.
    """

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    breaks: str
    expected_killer: str | None = None


S3_STORE_TESTS = tuple(
    f"tests/test_object_stores.py::{test}[s3]"
    for test in (
        "test_sink_writes_once_and_a_second_write_counts_as_delivered",
        "test_an_existing_object_is_kept_and_counts_as_delivered",
        "test_rerun_produces_the_same_objects_and_no_duplicates",
    )
)

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "deny_ignores_last_pattern",
        "transforms/rules/filter.py",
        "deny=compile_patterns(deny) if deny else None,",
        "deny=compile_patterns(deny[:-1]) if deny else None,",
        ("tests/test_filter.py", "tests/test_hostile_filter.py"),
        "a filter's last deny pattern is ignored: a denied field reaches the destination",
    ),
    Mutant(
        "filter_dotted_key_check_disabled",
        "transforms/rules/filter.py",
        'return "." in "".join(obj)',
        "return False",
        ("tests/test_filter.py", "tests/test_hostile_filter.py"),
        'a dotted key ({"geo.ip": ..}) escapes deny: [geo.ip] on the fast path',
    ),
    Mutant(
        "sixth_delayed_retry_skipped",
        "transforms/rules/retry.py",
        "can_wait = delayed_enabled and delayed_done < len(schedule_s)",
        "can_wait = delayed_enabled and delayed_done < len(schedule_s) - 1",
        ("tests/test_retry_policy.py", "tests/test_hostile_retry.py", "tests/test_retry_walk.py"),
        "the last step of the delayed schedule is never waited for (9 attempts, not 10)",
    ),
    Mutant(
        "sink_unaccounted_check_disabled",
        "transforms/rules/retry.py",
        "missing = outcome.add(result, sent)\n            if missing:",
        "missing = outcome.add(result, sent)\n            if False:",
        (
            "tests/test_retry_policy.py",
            "tests/test_hostile_delivery.py",
            "tests/test_deliver_observe.py",
        ),
        "events a sink neither delivered nor failed vanish instead of sink_unaccounted",
    ),
    Mutant(
        "s3_if_none_match_removed",
        "transforms/connectors/s3.py",
        '                IfNoneMatch="*",\n',
        "",
        S3_STORE_TESTS,
        "S3 writes are no longer create-only: a retry or rerun overwrites an object",
    ),
    Mutant(
        "gcs_if_generation_match_removed",
        "transforms/connectors/gcs.py",
        "                if_generation_match=0,\n",
        "",
        ("tests/test_gcs_precondition.py",),
        "GCS writes are no longer create-only (the emulator ignores it; the front does not)",
    ),
    Mutant(
        "gcs_412_not_already_present",
        "transforms/connectors/gcs.py",
        "        except api.PreconditionFailed:\n            return False\n",
        "        except api.PreconditionFailed:\n            raise\n",
        ("tests/test_gcs_precondition.py",),
        "a retried GCS batch that is already there fails (dead letter) instead of delivered",
    ),
    Mutant(
        "datadog_timestamp_epoch_s",
        "templates/datadog_logs.yaml",
        "timestamp: {path: event.timestamp, format: epoch_ms}",
        "timestamp: {path: event.timestamp, format: epoch_s}",
        ("tests/test_package.py", "tests/test_package_json.py", "tests/test_oracles.py"),
        "Datadog logs are dated in seconds, read by Datadog as milliseconds (1970)",
    ),
    Mutant(
        "summary_balanced_forced_true",
        "beam_pipeline/summary.py",
        '"balanced": inputs["balanced"] and all(r["balanced"] for r in connectors),',
        '"balanced": True,',
        ("tests/test_report.py", "tests/test_oracles.py"),
        "the summary says OK (and exit 0) when the counts do not add up",
    ),
    Mutant(
        "default_schedule_five_steps",
        "transforms/config.py",
        "default_factory=lambda: [300.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0],",
        "default_factory=lambda: [600.0, 900.0, 1200.0, 2000.0, 2500.0],",
        ("tests/test_config.py", "tests/test_retry_policy.py", "tests/test_oracles.py"),
        "the default delayed schedule has 5 steps (same 2 h total), not the documented 6",
    ),
    Mutant(
        "line_json_keeps_line_feed",
        "transforms/rules/encode.py",
        'if data.find(b"\\n") >= 0 or data.find(b"\\r") >= 0:',
        'if data.find(b"\\r") >= 0:',
        ("tests/test_line_records.py", "tests/test_encode.py", "tests/test_hostile_input.py"),
        "a pretty-printed input event is passed on with a raw LF: two NDJSON lines",
    ),
    Mutant(
        "safe_segment_keeps_slash",
        "transforms/rules/naming.py",
        'out = "".join(chr(b) if b in _SEGMENT_SAFE else f"%{b:02X}" for b in data)',
        'out = "".join(chr(b) if b in _SEGMENT_SAFE or b == 0x2F else f"%{b:02X}" for b in data)',
        ("tests/test_hostile_paths.py",),
        "a '/' in an event value opens new folders in an object or file name",
    ),
    Mutant(
        "new_relic_oversize_event_dropped",
        "transforms/connectors/new_relic.py",
        "        if len(part.indices) == 1:\n            index = part.indices[0]\n",
        "        if len(part.indices) == 1:\n            return []\n",
        ("tests/test_api_sinks.py",),
        "an event too large for one New Relic request disappears instead of a dead letter",
    ),
    Mutant(
        "route_regex_anchored",
        "transforms/rules/route.py",
        'pattern.search(got.encode("utf-8", "surrogatepass"))',
        'pattern.match(got.encode("utf-8", "surrogatepass"))',
        ("tests/test_route.py", "tests/test_route_regex_safety.py"),
        "op: regex matches only at the start of the value (a match, not a search)",
    ),
    Mutant(
        "sampling_by_event_not_session",
        "transforms/rules/route.py",
        'key = key if isinstance(key, str) else event["event_id"]\n'
        "            return session_bucket(key)",
        'key = event["event_id"]\n            return session_bucket(key)',
        ("tests/test_route.py", "tests/test_route_fastpath.py"),
        "sample_sessions keeps a fraction of events, splitting every session",
    ),
    Mutant(
        "hash_ignores_key",
        "transforms/rules/filter.py",
        "return hmac.new(self.key, data, hashlib.sha256).hexdigest()[: self.length]",
        "return hashlib.sha256(data).hexdigest()[: self.length]",
        ("tests/test_hashing.py", "tests/test_filter.py"),
        "hashed identifiers are a plain SHA-256: anyone can confirm a guessed user id",
    ),
    Mutant(
        "redact_misses_percent_encoding",
        "transforms/rules/redact.py",
        '    forms.append("".join("%" + _hex(b) for b in char.encode("utf-8")))'
        "  # percent-encoding\n",
        "",
        ("tests/test_hostile_delivery.py", "tests/test_api_sinks.py"),
        "a secret echoed URL-encoded by a server reaches dead letters and logs",
    ),
    Mutant(
        "cut_keys_in_arrival_order",
        "transforms/rules/naming.py",
        "        out.sort(key=_heaviest_first)\n",
        "",
        ("tests/test_backfill_objects.py",),
        "the local runner's two workers cut unequal shares of a backfill (one waits)",
    ),
    Mutant(
        "config_keeps_the_last_of_two_keys",
        "transforms/config.py",
        "            if key in lines:\n",
        "            if False:\n",
        ("tests/test_config.py",),
        "a second filter: silently replaces the first",
    ),
    Mutant(
        "boolean_read_as_a_number",
        "transforms/connectors/base.py",
        "    if isinstance(value, bool) and leaves & {int, float}:\n",
        "    if False:\n",
        ("tests/test_config.py",),
        "max_events: true is one event per batch",
    ),
)

ORIGIN_CHECK = "tests/test_mutants_origin_check.py"
ORIGIN_CHECK_TEXT = '''\
"""Written by scripts/mutants.py into its copy only: the copy's code is what runs."""

import os
from pathlib import Path

import beam_pipeline
import templates
import tests
import transforms


def test_the_copy_is_imported() -> None:
    root = Path(os.environ["MUTANTS_COPY_ROOT"]).resolve()
    for module in (transforms, beam_pipeline, templates, tests):
        assert root in Path(module.__file__).resolve().parents, module.__file__
'''

_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """One pytest run: whether it passed, its output and the first failing test."""

    passed: bool
    output: str
    seconds: float
    timed_out: bool = False

    @property
    def failed_ids(self) -> list[str]:
        """Node ids from pytest's ``-rfE`` summary (``FAILED tests/x.py::t - why``)."""
        return _FAILED_LINE.findall(self.output)


def check_mutants(mutants: Sequence[Mutant], root: Path) -> list[str]:
    """Problems that make mutants unusable: a missing file, ``old`` not found exactly once."""
    problems = []
    names = [m.name for m in mutants]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: the name is used twice")
    for m in mutants:
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(
                f"{m.name}: its text occurs {count} times in {m.file} (must be exactly once); "
                "update the mutant in scripts/mutants.py"
            )
        if m.old == m.new:
            problems.append(f"{m.name}: old and new text are the same")
    return problems


def mutate(text: str, mutant: Mutant) -> str:
    """``text`` with the mutant applied (``old`` must occur exactly once)."""
    if text.count(mutant.old) != 1:
        raise ValueError(f"{mutant.name}: text not found exactly once in {mutant.file}")
    return text.replace(mutant.old, mutant.new, 1)


def project_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files, as in the working tree."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return sorted({name for name in listing.split("\0") if name})


def copy_project(root: Path, dest: Path) -> int:
    """Copy the project's files into ``dest``; returns how many were copied.

    A file deleted in the working tree but still tracked is skipped. ``node_modules``
    (ignored by git; Azurite) is linked, not copied.
    """
    copied = 0
    for name in project_files(root):
        src = root / name
        if not src.is_file() and not src.is_symlink():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        copied += 1
    if (root / "node_modules").is_dir():
        (dest / "node_modules").symlink_to(root / "node_modules")
    return copied


def pytest_run(copy: Path, args: Sequence[str], stop_first: bool) -> Run:
    """Run the venv's pytest in ``copy`` on ``args``, the origin check first."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")])),
        "MUTANTS_COPY_ROOT": str(copy),
        # No .pyc files: a mutated module and its restored original may share an mtime
        # second and a size, and a stale .pyc would then run the wrong code.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [str(PYTEST), "-q", "-rfE", "-p", "no:cacheprovider", ORIGIN_CHECK, *args]
    if stop_first:
        argv.insert(1, "-x")
    start = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            cwd=copy,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        return Run(False, out, time.monotonic() - start, timed_out=True)
    output = (done.stdout + done.stderr).decode(errors="replace")
    return Run(done.returncode == 0, output, time.monotonic() - start)


def tests_of(mutants: Sequence[Mutant]) -> list[str]:
    """The pytest arguments of ``mutants``, each once, in order."""
    return list(dict.fromkeys(t for m in mutants for t in m.tests))


def tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of a run's output, indented under the verdict."""
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def list_mutants(mutants: Sequence[Mutant]) -> None:
    """Print each mutant: name, file, what it breaks, its tests (``--list``)."""
    for m in mutants:
        print(f"{m.name}\n    {m.file}: {m.breaks}\n    tests: {' '.join(m.tests)}")
        if m.expected_killer:
            print(f"    expected to be killed by {m.expected_killer}")


def run_mutants(mutants: Sequence[Mutant], root: Path) -> int:
    """Copy, baseline, then one run per mutant; print the verdicts; the exit code."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        copy = Path(tmp) / "project"
        n = copy_project(root, copy)
        (copy / ORIGIN_CHECK).write_text(ORIGIN_CHECK_TEXT, encoding="utf-8")
        print(f"copied {n} files to {copy}")

        origin = pytest_run(copy, [], stop_first=True)
        if not origin.passed:
            print("the copy's modules are not the ones imported; cannot judge mutants:")
            print(tail(origin.output))
            return 2

        wanted = [t for t in tests_of(mutants) if (copy / t.split("::")[0]).is_file()]
        missing = [t for t in tests_of(mutants) if t not in wanted]
        for t in missing:
            print(f"note: {t} does not exist (yet); its mutants run without it")
        print(f"baseline: {len(wanted)} test files/ids on the unchanged copy ...", flush=True)
        baseline = pytest_run(copy, wanted, stop_first=False)
        broken = sorted(set(baseline.failed_ids))
        print(f"baseline: {'passed' if baseline.passed else 'FAILED'} in {baseline.seconds:.0f} s")
        if baseline.timed_out:
            print("baseline timed out; cannot judge mutants")
            return 2
        if not baseline.passed and not broken:
            print("baseline failed without a test to deselect; cannot judge mutants:")
            print(tail(baseline.output))
            return 2
        for node in broken:
            print(f"  WARNING: fails without any mutant, deselected: {node}")
        deselect = [a for node in broken for a in ("--deselect", node)]

        survivors: list[tuple[Mutant, list[str]]] = []
        for m in mutants:
            target = copy / m.file
            original = target.read_text(encoding="utf-8")
            target.write_text(mutate(original, m), encoding="utf-8")
            try:
                tests = [t for t in m.tests if t in wanted]
                run = pytest_run(copy, [*tests, *deselect], stop_first=True)
            finally:
                target.write_text(original, encoding="utf-8")
            if run.timed_out:
                print(f"killed    {m.name:36} {run.seconds:6.1f} s  (timed out: a hang)")
            elif not run.passed:
                by = run.failed_ids[0] if run.failed_ids else "pytest exit code != 0"
                if by.startswith(ORIGIN_CHECK):
                    print(f"{m.name}: the copy's modules are not the ones imported:")
                    print(tail(run.output))
                    return 2
                print(f"killed    {m.name:36} {run.seconds:6.1f} s  by {by}")
            else:
                survivors.append((m, tests))
                note = (
                    f"  expected to be killed by {m.expected_killer}" if m.expected_killer else ""
                )
                print(f"SURVIVED  {m.name:36} {run.seconds:6.1f} s{note}")

    elapsed = time.monotonic() - start
    print(f"\n{len(mutants) - len(survivors)} of {len(mutants)} mutants killed in {elapsed:.0f} s")
    if not survivors:
        return 0
    print("\nsurvivors (their tests pass with the bug in place):")
    for m, tests in survivors:
        print(f"  {m.name} ({m.file}): {m.breaks}")
        print(f"    tests run: {' '.join(tests)}")
        if m.expected_killer:
            print(f"    expected to be killed by {m.expected_killer}")
    return 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--list`` and ``--only NAME`` (repeatable)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this mutant (repeatable)"
    )
    return parser.parse_args(argv)


def select(names: Sequence[str] | None) -> tuple[list[Mutant], list[str]]:
    """The mutants named (all when ``names`` is empty) and the names that match none."""
    if not names:
        return list(MUTANTS), []
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in names if n not in known]
    return [known[n] for n in dict.fromkeys(names) if n in known], unknown


def main(argv: Sequence[str] | None = None) -> int:
    """Check the mutants still apply, then list or run them; the exit code."""
    args = parse_args(argv)
    mutants, unknown = select(args.only)
    if unknown:
        print(f"unknown mutant(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    problems = check_mutants(mutants, ROOT)
    if problems:
        print("mutants that no longer apply:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.list:
        list_mutants(mutants)
        return 0
    return run_mutants(mutants, ROOT)


if __name__ == "__main__":
    sys.exit(main())
