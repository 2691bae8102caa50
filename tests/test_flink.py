"""The batch job end to end on Flink's embedded cluster, checked like the DirectRunner test.

``run --runner=FlinkRunner --flink_master=[local] --flink_job_server_jar=JAR
--environment_type=LOOPBACK --parallelism=2``: the job server (a JVM) starts a local Flink
cluster and executes the graph; the Python stages run in SDK workers inside this test
process (LOOPBACK), so the moto credentials set here reach the S3 connector.

The config is tests/test_end_to_end.py's (four file connectors: routing, filters,
sampling, templates, every format, bulking into several files per connector) plus an S3
connector writing to the moto stand-in; the oracle is that test's, so both runners are
held to the same expected output. The jar comes from scripts/fetch_flink_jobserver.py
(cached outside the repo); if it cannot be had the test fails with the reason.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.cli import main
from beam_pipeline.pipeline import Streaming, build_delivery
from tests.standins.object_stores import Server, Store, make_store
from tests.standins.pubsub import PubSubEmulator
from tests.test_end_to_end import (
    N_EVENTS,
    N_INVALID,
    canonical,
    config,
    oracle,
    read_records,
    write_corpus,
)
from transforms.config import parse_config
from transforms.rules.records import Chunk

pytest_plugins = ["tests.standins.object_stores", "tests.standins.pubsub"]

ROOT = Path(__file__).resolve().parents[1]
FETCH = ROOT / "scripts" / "fetch_flink_jobserver.py"
S3_MAX_EVENTS = 250
FILE_LIMITS = {"ops": 100, "sampled": 300, "everything": 250, "no_heartbeats": 400}


@pytest.fixture(scope="session")
def flink_job_server_jar() -> str:
    """The Flink job server jar (fetched once into the user cache); fails with the reason."""
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH: the Flink job server needs Java 11 or 17", pytrace=False)
    done = subprocess.run(
        [sys.executable, str(FETCH)], capture_output=True, text=True, timeout=1200, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot fetch the Flink job server jar ({FETCH.name} exit {done.returncode}):\n"
            f"{done.stderr}",
            pytrace=False,
        )
    jar = done.stdout.strip().splitlines()[-1]
    assert Path(jar).is_file(), done
    return jar


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return write_corpus(tmp_path_factory.mktemp("flink-corpus"), seed=23, iso_every=41)


@pytest.fixture
def s3(moto_server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Store]:
    """moto as an S3 store, its test credentials in this process's environment only."""
    store = make_store("s3", moto_server)
    missing = str(tmp_path / "no-such-aws-file")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    yield store


def flink_config(out: Path, store: Store, bucket: str) -> str:
    """The end-to-end test's config plus an S3 connector (all events, by type, gzipped)."""
    cfg = yaml.safe_load(config(out))
    cfg["connectors"].append(
        {
            "id": "archive_s3",
            "type": "s3",
            "deliver": {
                **store.deliver(bucket),
                "prefix": "{event_type}/{year}/{month}/{day}/",
                "format": "ndjson.gz",
                "batch": {"max_events": S3_MAX_EVENTS},
            },
        }
    )
    return json.dumps(cfg, indent=2)  # JSON is YAML


def flink_flags(jar: str) -> list[str]:
    return [
        "--runner=FlinkRunner",
        "--flink_master=[local]",
        f"--flink_job_server_jar={jar}",
        "--environment_type=LOOPBACK",
        "--parallelism=2",
    ]


def run_on_flink(tmp: Path, cfg: str, source: Path, jar: str) -> dict[str, Any]:
    path = tmp / "delivery.yaml"
    path.write_text(cfg)
    summary = tmp / "summary.json"
    summary.unlink(missing_ok=True)
    code = main(
        [
            "run",
            "--config",
            str(path),
            "--input",
            str(source),
            "--summary-json",
            str(summary),
            "--chunk-lines",
            "700",
            *flink_flags(jar),
        ]
    )
    result = json.loads(summary.read_text())
    assert code == 0, result
    return result


def s3_objects(store: Store, bucket: str) -> dict[str, bytes]:
    return {name: store.read(bucket, name) for name in store.names(bucket)}


def assert_files_match_the_oracle(out: Path, events: list[dict[str, Any]]) -> list[Any]:
    """Each file connector's records equal the oracle, files within max_events; dead letters."""
    for cid, want in oracle(events).items():
        got, sizes, _ = read_records(out / cid)
        assert canonical(got) == canonical(want), cid
        assert max(sizes) <= FILE_LIMITS[cid], cid
    return [
        json.loads(line)
        for f in (out / "dead_letter").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]


def test_batch_job_on_flink_delivers_exactly_the_oracle(
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    flink_job_server_jar: str,
    s3: Store,
) -> None:
    source, events = corpus
    bucket = s3.new_bucket()
    cfg = flink_config(tmp_path / "out", s3, bucket)
    summary = run_on_flink(tmp_path, cfg, source, flink_job_server_jar)

    expected = oracle(events)
    rows = {r["id"]: r for r in summary["connectors"]}
    for cid, want in expected.items():
        got, sizes, files = read_records(tmp_path / "out" / cid)
        assert canonical(got) == canonical(want), cid
        assert len({r.get("event_id") for r in got}) == len(got), f"{cid}: duplicates"
        assert max(sizes) <= FILE_LIMITS[cid], cid
        assert len(files) >= len(want) // FILE_LIMITS[cid], f"{cid}: not bulked into files"
        assert rows[cid]["routed"] == rows[cid]["delivered"] == len(want), (cid, rows[cid])
        assert rows[cid]["dead_lettered"] == 0 and rows[cid]["writes"] == len(files), cid
    assert 0 < len(expected["sampled"]) < N_EVENTS

    objects = s3_objects(s3, bucket)
    batches = {name: gzip.decompress(data).decode().splitlines() for name, data in objects.items()}
    got = [json.loads(line) for lines in batches.values() for line in lines]
    assert canonical(got) == canonical(events)  # no route or filter: every event, unchanged
    assert max(len(lines) for lines in batches.values()) <= S3_MAX_EVENTS
    for name, lines in batches.items():
        types = {json.loads(line)["event"]["type"] for line in lines}
        assert types == {name.split("/")[0]}, name  # the prefix is the batch's event type
        assert name.endswith(".ndjson.gz") and "archive_s3-" in name
    s3_row = rows["archive_s3"]
    assert s3_row["routed"] == s3_row["delivered"] == N_EVENTS
    assert s3_row["writes"] == len(objects) and s3_row["dead_lettered"] == 0

    assert {k: summary["input"][k] for k in ("lines_read", "events", "invalid", "blank_lines")} == {
        "lines_read": N_EVENTS + N_INVALID,
        "events": N_EVENTS,
        "invalid": N_INVALID - 2,
        "blank_lines": 2,
    }
    assert summary["input"]["unmatched"] == 0 and summary["balanced"]
    letters = [
        json.loads(line)
        for f in (tmp_path / "out" / "dead_letter").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    assert len(letters) == N_INVALID - 2
    assert all(d["stage"] == "parse" for d in letters)

    # A rerun on Flink rewrites the same files and finds every object already there.
    first = {cid: read_records(tmp_path / "out" / cid)[2] for cid in expected}
    versions = {name: s3.version(bucket, name) for name in objects}
    again = run_on_flink(tmp_path, cfg, source, flink_job_server_jar)
    assert {cid: read_records(tmp_path / "out" / cid)[2] for cid in expected} == first
    assert s3_objects(s3, bucket) == objects
    assert {name: s3.version(bucket, name) for name in objects} == versions  # not rewritten
    assert {r["id"]: r["delivered"] for r in again["connectors"]} == {
        r["id"]: r["delivered"] for r in summary["connectors"]
    }


def test_batch_graph_without_a_shared_disk_on_flink(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], flink_job_server_jar: str
) -> None:
    """The backfill graph a Flink cluster or Dataflow gets (records through the shuffle,
    sorted and cut by the worker that gets each key) run on Flink: the oracle's files."""
    source, events = corpus
    lines = gzip.decompress(source.read_bytes()).split(b"\n")[:-1]
    chunks = [
        ("flink", n, Chunk(lines[i : i + 500])) for n, i in enumerate(range(0, len(lines), 500))
    ]
    cfg = parse_config(config(tmp_path / "out"))
    pipeline = beam.Pipeline(options=PipelineOptions(flink_flags(flink_job_server_jar)))
    build_delivery(pipeline | "Chunks" >> beam.Create(chunks), cfg, shared_disk=False)
    result = pipeline.run()
    result.wait_until_finish(duration=240_000)
    assert str(result.state) == "DONE", result.state

    letters = assert_files_match_the_oracle(tmp_path / "out", events)
    assert len(letters) == N_INVALID - 2 and all(d["stage"] == "parse" for d in letters)


def test_streaming_graph_on_flink_with_a_bounded_source(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], flink_job_server_jar: str
) -> None:
    """The streaming graph (GroupIntoBatches with sharded keys and timers) on Flink streaming.

    Pub/Sub cannot be read on portable Flink here (docs/flink.md), so the same chunks the
    Pub/Sub reader would emit come from a bounded ``Create``; Flink still runs the job in
    streaming mode, and the end of the input flushes every buffered batch.
    """
    source, events = corpus
    lines = gzip.decompress(source.read_bytes()).split(b"\n")[:-1]
    chunks = [
        ("flink", n, Chunk(lines[i : i + 500])) for n, i in enumerate(range(0, len(lines), 500))
    ]
    cfg = parse_config(config(tmp_path / "out"))
    options = PipelineOptions([*flink_flags(flink_job_server_jar), "--streaming"])
    pipeline = beam.Pipeline(options=options)
    build_delivery(pipeline | "Chunks" >> beam.Create(chunks), cfg, Streaming())
    result = pipeline.run()
    result.wait_until_finish(duration=240_000)
    assert str(result.state) == "DONE", result.state

    letters = assert_files_match_the_oracle(tmp_path / "out", events)
    assert len(letters) == N_INVALID - 2 and all(d["stage"] == "parse" for d in letters)


def test_streaming_job_on_flink_reads_pubsub(
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    flink_job_server_jar: str,
    pubsub_env: PubSubEmulator,
) -> None:
    """``run --streaming --subscription S --runner FlinkRunner``: the user's command on Flink.

    The portable Pub/Sub reader (transforms/pubsub_read.py, chosen automatically for the
    FlinkRunner) reads Google's emulator; ``--run-for-s`` makes it stop reading, after
    which Flink drains the job and it finishes by itself. Every message was published
    before the start, so all of them must be delivered exactly as the oracle says.
    """
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    source, events = corpus
    lines = [x for x in gzip.decompress(source.read_bytes()).split(b"\n") if x.strip()]
    topic = pubsub_env.create_topic("events")
    subscription = pubsub_env.create_subscription(topic, ack_deadline_s=10)
    publisher = pubsub_v1.PublisherClient()
    for future in [publisher.publish(topic, line) for line in lines]:
        future.result(timeout=60)
    path = tmp_path / "delivery.yaml"
    path.write_text(config(tmp_path / "out"))
    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "run",
            "--config",
            str(path),
            "--streaming",
            "--subscription",
            subscription,
            "--run-for-s",
            "60",
            "--pubsub-ack",  # the embedded cluster does not checkpoint: ack on reading
            "immediate",
            "--summary-json",
            str(summary_path),
            *flink_flags(flink_job_server_jar),
        ]
    )
    summary = json.loads(summary_path.read_text())
    assert code == 0, summary
    letters = assert_files_match_the_oracle(tmp_path / "out", events)
    assert len(letters) == len(lines) - len(events)
    assert all(d["stage"] == "parse" for d in letters)
    # Every message acked: past the ack deadline an unacked one would be delivered again.
    time.sleep(11)
    assert pubsub_env.pull(subscription, expected=0, timeout=2) == [], "every message acked"


def test_fetch_script_reuses_the_cached_jar_without_maven(
    flink_job_server_jar: str, tmp_path: Path
) -> None:
    # No mvn on PATH: a second call must answer from the cache alone.
    done = subprocess.run(
        [sys.executable, str(FETCH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == flink_job_server_jar
