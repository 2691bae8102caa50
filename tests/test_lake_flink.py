"""Issue 23's "done means" on Flink: the warehouse and lake connectors, batch and streaming.

The job of tests/test_lake_streaming.py (``bigquery`` streaming inserts to the strict
receiver, ``bigquery`` ``method: storage_write`` over gRPC to the strict ``BigQueryWrite``
stand-in, Hive-partitioned Parquet with a declared schema to moto S3, ``csv.zst`` to the
GCS emulator, typed Avro from ``schema: auto`` to Azurite), run on Flink's embedded
cluster with tests/test_flink.py's flags (``--environment_type=LOOPBACK``), once each way
(module fixtures; the tests below check the two runs):

* batch: ``run --input FILE`` (the user's backfill command on Flink);
* streaming: ``run --streaming --subscription S --run-for-s N --pubsub-ack immediate``
  reading the same events from the Pub/Sub emulator; it stops reading, drains and
  finishes by itself (as tests/test_languages_across_runners.py's Flink run).

Both are held to the expectations tests/test_lake_streaming.py computes from the input
events by plain Python: every record read back from each destination exactly once, each
refused event exactly one dead letter with its reason (``not_retryable`` from BigQuery's
per-row errors, from a value the Storage Write row cannot encode and from the write
stand-in's ``row_errors``, ``format_refused``, ``package_cast_failed``,
``prefix_unrenderable``), and a summary that counts all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from beam_pipeline.cli import main
from tests.standins.object_stores import Server
from tests.standins.pubsub import PubSubEmulator
from tests.test_flink import flink_flags, flink_job_server_jar  # noqa: F401 (a fixture)
from tests.test_lake_streaming import (
    CONNECTORS,
    Expected,
    Lake,
    check_outputs,
    check_summary,
    connectors_yaml,
    expected,
    lake_events,
    lake_in_env,
    lake_lines,
    publish,
)
from tests.test_streaming_default_engine import _start_job

pytest_plugins = ["tests.standins.pubsub", "tests.standins.object_stores"]
pytestmark = pytest.mark.flink

FLINK_READ_S = 90
"""How long the streaming run reads, counted from the command's start: the job server and
the embedded cluster start within it, and every message was published before."""


@dataclass
class FlinkRun:
    """One finished run: where it delivered, its exit code, summary and log."""

    lake: Lake
    out: Path
    code: int
    summary: dict[str, Any]
    log: str
    want: Expected


@pytest.fixture(scope="module")
def batch_run(
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: Server,
    gcs_emulator: Server,
    azurite: Server,
    flink_job_server_jar: str,  # noqa: F811
) -> Iterator[FlinkRun]:
    tmp = tmp_path_factory.mktemp("lake-flink-batch")
    with lake_in_env(moto_server, gcs_emulator, azurite, tmp) as lake:
        out = tmp / "out"
        config = tmp / "delivery.yaml"
        config.write_text(
            f"connectors:\n{connectors_yaml(lake)}\n"
            f"dead_letter: {{path: {json.dumps(str(out / 'dead_letter'))}}}\n"
        )
        source = tmp / "events.jsonl"
        source.write_bytes(b"".join(line + b"\n" for line in lake_lines()))
        summary = out / "summary.json"
        argv = ["run", "--config", str(config), "--input", str(source)]
        argv += ["--summary-json", str(summary), "--no-progress"]
        code = main([*argv, *flink_flags(flink_job_server_jar)])
        yield FlinkRun(
            lake, out, code, json.loads(summary.read_text()), "", expected(lake_events())
        )


@pytest.fixture(scope="module")
def streaming_run(
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: Server,
    gcs_emulator: Server,
    azurite: Server,
    pubsub_emulator: PubSubEmulator,
    flink_job_server_jar: str,  # noqa: F811
) -> Iterator[FlinkRun]:
    tmp = tmp_path_factory.mktemp("lake-flink-streaming")
    with lake_in_env(moto_server, gcs_emulator, azurite, tmp) as lake:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
            subscription = publish(pubsub_emulator, lake_lines())
            proc, log = _start_job(
                tmp,
                connectors_yaml(lake),
                "--subscription",
                subscription,
                "--run-for-s",
                str(FLINK_READ_S),
                "--pubsub-ack",  # the embedded cluster does not checkpoint: ack on reading
                "immediate",
                *flink_flags(flink_job_server_jar),
            )
            try:
                proc.wait(timeout=FLINK_READ_S + 300)  # stops reading, drains, ends by itself
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
        out = tmp / "out"
        summary_path = out / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        printed = (tmp / "job.log").read_text()
        yield FlinkRun(lake, out, proc.returncode, summary, printed, expected(lake_events()))


RUNS = ["batch_run", "streaming_run"]


@pytest.mark.parametrize("run_name", RUNS)
def test_every_record_lands_once_and_every_refusal_is_one_dead_letter(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    run: FlinkRun = request.getfixturevalue(run_name)
    assert run.summary, run.log[-3000:]
    check_outputs(run.lake, run.out, run.want)  # nothing missing, duplicated or extra
    rows = {r["id"]: r for r in run.summary["connectors"]}
    for cid in CONNECTORS:  # (the Deliver counters: the test below)
        assert rows[cid]["routed"] == len(lake_events()), (cid, rows[cid])


@pytest.mark.parametrize("run_name", RUNS)
def test_the_summary_counts_every_dead_letter_and_balances(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    """Exact counts and exit 0. Flink's job server reports a step's counter once per fused
    stage that runs it (the dead-letter writer fed by two stages, Deliver by several); the
    summary sums them (beam_pipeline/summary.py), where Beam's ``from_monitoring_infos``
    kept only the last: lake_parquet's dead letters 9 of 10 in batch, delivered 0 for
    every connector in streaming, MISMATCH and exit 1 while every output was exact."""
    run: FlinkRun = request.getfixturevalue(run_name)
    assert run.summary, run.log[-3000:]
    check_summary(run.summary, run.want)
    assert run.code == 0, run.log[-3000:]
