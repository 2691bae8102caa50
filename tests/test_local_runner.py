"""A local batch run's worker processes import Beam without the clients the run skips.

Beam starts ``multi_processing`` workers with a fixed command that imports Beam whole;
:class:`LocalRunner` starts them through ``beam_pipeline.worker`` instead. These tests run
real worker processes (2 of them) and look inside them from a DoFn.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from beam_pipeline import cli
from beam_pipeline.local_runner import BEAM_WORKER_COMMAND, LocalRunner, use_workers
from beam_pipeline.startup import modules_to_skip
from beam_pipeline.worker import worker_command
from examples.generate_events import generate
from tests.test_startup import CLOUD_CLIENTS, write_config

WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def _proto(command: str) -> object:
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1])
    environment = SubprocessSDKEnvironment.from_command_string(command)
    return pipeline.to_runner_api(default_environment=environment)


def test_only_beams_own_worker_command_is_replaced() -> None:
    ours = worker_command(["pymongo", "apache_beam.io.gcp.bigquery"])
    python, flag, code = shlex.split(ours)
    assert (python, flag) == (sys.executable, "-c")
    assert "main(['pymongo', 'apache_beam.io.gcp.bigquery'])" in code
    proto = _proto(BEAM_WORKER_COMMAND)
    assert use_workers(proto, ours) == 1
    payloads = [env.payload for env in proto.components.environments.values()]  # type: ignore[attr-defined]
    assert ours.encode() in payloads
    assert BEAM_WORKER_COMMAND.encode() not in payloads
    # Someone else's command (a user's own environment) is left alone.
    other = _proto("/opt/python -m my_harness")
    assert use_workers(other, ours) == 0


def _inside_worker(_: int, parent: int) -> tuple[bool, list[str]]:
    return os.getpid() != parent, sorted(m for m in CLOUD_CLIENTS if m in sys.modules)


def test_workers_import_beam_without_skipped_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # workers start here: they must not depend on the folder
    config = write_config(tmp_path)
    skip = modules_to_skip(["--config", str(config)])
    assert "apache_beam.io.gcp.gcsfilesystem" in skip
    with beam.Pipeline(runner=LocalRunner(skip), options=PipelineOptions(WORKERS)) as p:
        seen = (
            p
            | beam.Create(range(4))
            | beam.Reshuffle()
            | beam.Map(_inside_worker, parent=os.getpid())
        )
        # Every element ran in a worker process that loaded none of the clients.
        assert_that(seen, equal_to([(True, [])] * 4))


def test_run_on_worker_processes_delivers_every_event(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for part in range(2):
        (inputs / f"part{part}.jsonl").write_bytes(b"\n".join(generate(300, seed=part)) + b"\n")
    summary = tmp_path / "summary.json"
    argv = ["run", "--config", str(config), "--input", str(inputs / "*.jsonl")]
    argv += [*WORKERS, "--no-progress", "--summary-json", str(summary)]
    assert cli.main(argv) == 0
    result = json.loads(summary.read_text())
    assert result["balanced"] is True
    files = (tmp_path / "out").rglob("*.ndjson")
    assert sum(len(f.read_text().splitlines()) for f in files) == 600
