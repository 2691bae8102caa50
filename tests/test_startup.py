"""A local batch run imports Beam without the cloud clients it does not use, and only then.

The end-to-end tests run the command line's ``main`` in a fresh interpreter, which then
writes the names of every module it has loaded (``sys.modules``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from beam_pipeline.startup import (
    FILESYSTEM_PLUGINS,
    UNUSED_BY_BATCH_RUNS,
    import_beam,
    modules_to_skip,
)
from examples.generate_events import generate
from tests.standins.object_stores import Store

pytest_plugins = ["tests.standins.object_stores"]

ROOT = Path(__file__).resolve().parents[1]
CLOUD_CLIENTS = (
    "google.cloud.storage",
    "azure.storage.blob",
    "boto3",
    "pymongo",
    "google.cloud.bigquery",
    "google.cloud.dataflow",
    "google.cloud.pubsub_v1",
)


def write_config(tmp: Path, dead_letter: str | None = None) -> Path:
    config = {
        "connectors": [{"id": "archive", "type": "file", "deliver": {"path": str(tmp / "out")}}],
        "dead_letter": {"path": dead_letter or str(tmp / "dead_letter")},
    }
    path = tmp / "delivery.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


DRIVER = """
import json, os, sys
from beam_pipeline.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump([os.environ.get("OPENBLAS_NUM_THREADS"), *sorted(sys.modules)], out)
sys.exit(code)
"""
"""Runs ``main`` like ``python -m beam_pipeline``, then lists the loaded modules (after
the value of ``OPENBLAS_NUM_THREADS`` the run had)."""


def run_cli(tmp: Path, *argv: str) -> tuple[dict[str, Any], set[str], str | None]:
    summary, modules = tmp / "summary.json", tmp / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(modules), "run", *argv,
         "--summary-json", str(summary), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    blas_threads, *loaded = json.loads(modules.read_text())
    return json.loads(summary.read_text()), set(loaded), blas_threads


def delivered(summary: dict[str, Any]) -> int:
    (archive,) = summary["connectors"]
    return int(archive["delivered"])


def events_file(path: Path, n: int) -> bytes:
    data = b"\n".join(generate(n, seed=5)) + b"\n"
    path.write_bytes(data)
    return data


# -- which modules a run skips ---------------------------------------------------------------


def test_a_local_run_skips_every_cloud_plugin(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    skip = modules_to_skip(["--config", str(config), "--input", "events/*.jsonl.gz"])
    assert set(skip) == {*FILESYSTEM_PLUGINS.values(), *UNUSED_BY_BATCH_RUNS}


@pytest.mark.parametrize(
    ("extra", "dead_letter", "kept"),
    [
        (["--input", "s3://bucket/events/*.gz"], None, "s3"),
        (["--input=gs://bucket/events.gz"], None, "gs"),
        ([], "gs://bucket/dead_letter/", "gs"),
        ([], "azfs://account/container/dead_letter/", "azfs"),
        (["--temp_location", "s3://bucket/tmp"], None, "s3"),
    ],
)
def test_a_scheme_named_anywhere_keeps_its_plugin(
    tmp_path: Path, extra: list[str], dead_letter: str | None, kept: str
) -> None:
    config = write_config(tmp_path, dead_letter)
    skip = modules_to_skip(["--config", str(config), "--input", "local.jsonl", *extra])
    assert FILESYSTEM_PLUGINS[kept] not in skip
    assert {m for s, m in FILESYSTEM_PLUGINS.items() if s != kept} <= set(skip)


def test_a_location_from_the_environment_keeps_its_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DEAD_LETTER_PATH", "gs://bucket/dead_letter/")
    config = write_config(tmp_path, "${env:TEST_DEAD_LETTER_PATH}")
    assert FILESYSTEM_PLUGINS["gs"] not in modules_to_skip(["--config", str(config)])


@pytest.mark.parametrize(
    "extra",
    [
        ["--runner", "FlinkRunner"],
        ["--runner=DataflowRunner"],
        ["--streaming"],
        ["--subscription", "projects/p/subscriptions/s"],
    ],
)
def test_other_runners_and_streaming_import_beam_whole(tmp_path: Path, extra: list[str]) -> None:
    assert modules_to_skip(["--config", str(write_config(tmp_path)), *extra]) == ()


def test_a_remote_or_missing_config_imports_beam_whole(tmp_path: Path) -> None:
    assert modules_to_skip(["--config", "gs://bucket/delivery.yaml"]) == ()
    assert modules_to_skip(["--config", str(tmp_path / "missing.yaml")]) == ()
    assert modules_to_skip(["--input", "x.jsonl"]) == ()


def test_import_beam_changes_nothing_once_beam_is_imported() -> None:
    import apache_beam  # noqa: F401  (as in any process that already uses Beam)

    assert import_beam(FILESYSTEM_PLUGINS.values()) == ()


# -- the real command ------------------------------------------------------------------------


def test_a_local_run_imports_no_cloud_client_and_delivers_everything(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    events_file(source, 300)
    config = write_config(tmp_path)
    summary, modules, blas_threads = run_cli(
        tmp_path, "--config", str(config), "--input", str(source)
    )
    assert summary["balanced"]
    assert delivered(summary) == 300
    assert "apache_beam" in modules
    assert modules.isdisjoint(CLOUD_CLIENTS), sorted(modules.intersection(CLOUD_CLIENTS))
    assert modules.isdisjoint(FILESYSTEM_PLUGINS.values())
    assert blas_threads == "1"  # numpy's OpenBLAS does not start a spinning thread per core


@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_a_run_reading_s3_keeps_beams_s3_filesystem(
    object_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # a user's setting wins
    bucket = object_store.new_bucket()
    data = events_file(tmp_path / "events.jsonl", 200)
    object_store.client.put_object(Bucket=bucket, Key="in/events.jsonl", Body=data)
    summary, modules, blas_threads = run_cli(
        tmp_path,
        "--config", str(write_config(tmp_path)),
        "--input", f"s3://{bucket}/in/*.jsonl",
        "--s3_endpoint_url", object_store.server.url,
    )  # fmt: skip
    assert summary["balanced"]
    assert delivered(summary) == 200
    assert FILESYSTEM_PLUGINS["s3"] in modules
    assert modules.isdisjoint([FILESYSTEM_PLUGINS["gs"], FILESYSTEM_PLUGINS["azfs"]])
    assert blas_threads == "2"
