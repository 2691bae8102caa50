"""``run`` uses every core for large local backfills, unless told otherwise."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from beam_pipeline import runners

MB = 1024 * 1024


def decide(
    argv: list[str], files: dict[str, int], monkeypatch: pytest.MonkeyPatch, cores: int = 2
) -> tuple[bool, int, str]:
    monkeypatch.setattr(runners.os, "cpu_count", lambda: cores)
    options = PipelineOptions(argv)
    used = runners.use_every_core(options, argv, files)
    direct = options.view_as(DirectOptions)
    return used, direct.direct_num_workers, direct.direct_running_mode


def test_large_split_input_gets_a_worker_per_core(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {f"part{i}.jsonl.gz": 8 * MB for i in range(4)}
    assert decide(["--config", "c.yaml"], files, monkeypatch) == (True, 2, "multi_processing")
    assert "using 2 worker processes for 4 input files (32 MiB);" in capsys.readouterr().err


def test_fewer_files_than_cores_are_shared_by_the_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"a.gz": 20 * MB, "b.gz": 20 * MB}
    assert decide([], files, monkeypatch, cores=8) == (True, 8, "multi_processing")
    assert "4 reading each file" in capsys.readouterr().err


def test_one_large_file_is_read_by_every_worker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"one.jsonl.gz": 100 * MB}
    assert decide([], files, monkeypatch) == (True, 2, "multi_processing")
    assert "using 2 worker processes for 1 input file (100 MiB), 2 reading each file" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "files", "shards"),
    [
        ([], {"a.gz": 1}, 1),  # one process
        (["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"], {"a": 1}, 2),
        (["--direct_num_workers", "3", "--direct_running_mode", "multi_processing"], {"a": 1}, 3),
        (
            ["--direct_num_workers", "3", "--direct_running_mode", "multi_processing"],
            {"a": 1, "b": 1},
            2,
        ),
        (
            ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
            {"a": 1, "b": 1, "c": 1},
            1,
        ),
        (["--direct_num_workers", "0", "--direct_running_mode", "multi_processing"], {"a": 1}, 2),
    ],
)
def test_read_shards(
    argv: list[str], files: dict[str, int], shards: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 2)
    assert runners.read_shards(PipelineOptions(argv), files) == shards


@pytest.mark.parametrize(
    ("argv", "files", "cores"),
    [
        ([], {"a.gz": 2 * MB, "b.gz": 2 * MB}, 2),  # small: worker start-up would dominate
        ([], {"a.gz": 20 * MB, "b.gz": 20 * MB}, 1),  # one core
        (["--direct_num_workers", "1"], {"a.gz": 20 * MB, "b.gz": 20 * MB}, 2),
        (["--direct_num_workers=1"], {"a.gz": 20 * MB, "b.gz": 20 * MB}, 2),
        (["--direct_running_mode", "in_memory"], {"a.gz": 20 * MB, "b.gz": 20 * MB}, 2),
        (["--runner", "DirectRunner"], {"a.gz": 20 * MB, "b.gz": 20 * MB}, 2),
    ],
)
def test_stays_in_one_process(
    argv: list[str], files: dict[str, int], cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    used, workers, mode = decide(argv, files, monkeypatch, cores)
    assert not used
    assert mode == PipelineOptions(argv).view_as(DirectOptions).direct_running_mode
    assert workers == PipelineOptions(argv).view_as(DirectOptions).direct_num_workers
