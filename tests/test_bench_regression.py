"""The benchmark's bound is faithful: it writes what the job writes.

The plain-Python bound (bench/bound.py) writes exactly the files the job writes: same
names, same bytes, on a corpus with invalid and blank lines, split in two files, with the
20-connector benchmark config (every archetype and format). Whether the job has fallen
behind the bound is a measurement, not a test: ``make bench-check`` (bench/run.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipeline.cli import main as cli_main
from bench import bound, corpus
from tests.jobs import delivered_files

ROOT = Path(__file__).resolve().parents[1]


WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


@pytest.mark.parametrize(
    ("processes", "files"),
    [
        pytest.param([], 2, id="one-process"),
        # Worker processes started by LocalRunner (beam_pipeline/worker.py) write the same,
        pytest.param(WORKERS, 2, id="two-worker-processes"),
        # also when both read the one file, each parsing every other chunk.
        pytest.param(WORKERS, 1, id="one-file-two-workers"),
    ],
)
def test_bound_writes_the_same_files_as_the_job(
    tmp_path: Path, processes: list[str], files: int
) -> None:
    parts = corpus.ensure_corpus(12_000, seed=7, parts=files, folder=tmp_path / "cache", invalid=6)
    pattern = str(parts[0].with_name("events-12000-seed7-invalid6-part*of2.jsonl.gz"))
    if files == 1:
        pattern = str(parts[0])
    chunk = "2000"
    job_out, bound_out = tmp_path / "job", tmp_path / "bound"
    job_cfg = corpus.bench_config(20, job_out, job_out / "delivery.yaml")
    bound_cfg = corpus.bench_config(20, bound_out, bound_out / "delivery.yaml")

    summary_path = tmp_path / "summary.json"
    run = ["run", "--config", str(job_cfg), "--input", pattern, "--no-progress", *processes]
    code = cli_main([*run, "--chunk-lines", chunk, "--summary-json", str(summary_path)])
    assert code == 0
    result = bound.run_bound(str(bound_cfg), [pattern], int(chunk))

    job_files, bound_files = delivered_files(job_out), delivered_files(bound_out)
    assert len(parts) == files
    assert len(job_files) > 100  # many batches: every connector, several chunks and prefixes
    assert sorted(job_files) == sorted(bound_files)
    different = [name for name in job_files if job_files[name] != bound_files[name]]
    assert different == []

    summary = json.loads(summary_path.read_text())
    assert (result.events, result.invalid, result.blank_lines) == (
        summary["input"]["events"],
        summary["input"]["invalid"],
        summary["input"]["blank_lines"],
    )
    assert result.invalid == 5 and result.blank_lines == 1
    assert {c["id"]: c["delivered"] for c in summary["connectors"]} == {
        cid: c.delivered for cid, c in result.connectors.items()
    }


def test_bound_applies_package_functions_and_every_language_construct(tmp_path: Path) -> None:
    """The languages example (route groups, a catch-all, casts, a ``package.function`` that
    fans out, drops and raises): the bound writes the job's files and counts the same."""
    from tests.test_languages_across_runners import write_config, write_input

    job_dir, bound_dir = tmp_path / "job", tmp_path / "bound"
    job_dir.mkdir()
    bound_dir.mkdir()
    events = write_input(tmp_path)
    summary_path = tmp_path / "summary.json"
    config = str(write_config(job_dir))
    run = ["run", "--config", config, "--input", str(events), "--no-progress"]
    code = cli_main([*run, "--summary-json", str(summary_path)])
    assert code == 0
    result = bound.run_bound(str(write_config(bound_dir)), [str(events)])

    job_files = delivered_files(job_dir / "out")
    bound_files = delivered_files(bound_dir / "out")
    assert job_files and sorted(job_files) == sorted(bound_files)
    assert [n for n in job_files if job_files[n] != bound_files[n]] == []
    rows = {c["id"]: c for c in json.loads(summary_path.read_text())["connectors"]}
    assert {cid: c.delivered for cid, c in result.connectors.items()} == {
        cid: row["delivered"] for cid, row in rows.items()
    }


@pytest.mark.integration  # starts processes
def test_the_shuffle_variant_builds_a_clusters_cut_and_writes_the_bounds_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_pipeline import pipeline
    from bench import run as bench_run
    from transforms.config import load_config

    def cut_labels() -> set[str]:
        p = beam.Pipeline(runner=FnApiRunner())
        config = load_config(str(corpus.bench_config(5, tmp_path / "g", tmp_path / "g.yaml")))
        pipeline.build_pipeline(p, config, [str(tmp_path / "none.jsonl")])
        return set(p.applied_labels)

    assert "Batch/CutGroup" not in cut_labels()  # one machine: runs spilled to its disk
    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "shares_local_disk", pipeline.shares_local_disk)
        exec(bench_run.SHUFFLE_PATCH, {})  # what the variant's program runs first
        assert "Batch/CutGroup" in cut_labels()

    single = corpus.ensure_corpus(12_000, seed=7, parts=1, folder=tmp_path / "cache")
    runs = [
        bench_run.run_variant(v, 5, single, [], tmp_path, workers=2)
        for v in ("bound", "job shuffle")
    ]
    assert [r.failed for r in runs] == [None, None]
    bench_run.check(runs)  # same events per connector, same files and bytes
    assert runs[1].writes > 30  # several objects per connector, so the cut had work
