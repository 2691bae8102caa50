"""``run`` uses every core for large local backfills, unless told otherwise."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from beam_pipeline import cli

MB = 1024 * 1024


def decide(
    argv: list[str], files: dict[str, int], monkeypatch: pytest.MonkeyPatch, cores: int = 2
) -> tuple[bool, int, str]:
    monkeypatch.setattr(cli.os, "cpu_count", lambda: cores)
    options = PipelineOptions(argv)
    used = cli._use_every_core(options, argv, files)
    direct = options.view_as(DirectOptions)
    return used, direct.direct_num_workers, direct.direct_running_mode


def test_large_split_input_gets_a_worker_per_core(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {f"part{i}.jsonl.gz": 8 * MB for i in range(4)}
    assert decide(["--config", "c.yaml"], files, monkeypatch) == (True, 2, "multi_processing")
    assert "using 2 worker processes for 4 input files (32 MiB)" in capsys.readouterr().err


def test_no_more_workers_than_files(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"a.gz": 20 * MB, "b.gz": 20 * MB}
    assert decide([], files, monkeypatch, cores=8) == (True, 2, "multi_processing")


@pytest.mark.parametrize(
    ("argv", "files", "cores"),
    [
        ([], {"one.jsonl.gz": 100 * MB}, 2),  # one file: gzip cannot be split
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
