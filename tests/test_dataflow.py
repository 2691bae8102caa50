"""Dataflow readiness: the Flex Template files, and the graph translated by DataflowRunner.

* ``templates/dataflow/metadata.json``: every parameter is documented, is a flag the
  launcher parses, and its validation regex accepts good values and refuses bad ones.
* ``templates/dataflow/Dockerfile``: builds on the Python Flex Template base image and its
  ``FLEX_TEMPLATE_PYTHON_*`` variables point at files the image copies from this repo.
* The launcher (``templates/dataflow/main.py``) builds the batch and the streaming job and
  runs them through ``DataflowRunner`` with Beam's ``--dry_run=True``: the graph is built,
  Dataflow's overrides applied, the pipeline proto validated and the job description
  made; nothing is submitted. No Google credentials are needed: the tests make any
  credential lookup fail (no ADC file, metadata server on a closed port) to prove it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.options import DeliveryOptions
from templates.dataflow import main as launcher
from tests.standins.object_stores import closed_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "dataflow"
BASE_IMAGE = "gcr.io/dataflow-templates-base/python311-template-launcher-base"
STAGES = {
    "Read",
    "Parse",
    "Route",
    "Filter",
    "Package",
    "Batch",
    "Deliver",
    "CollectFailures",
    "DeadLetters",
}
PARAM_TYPES = {"TEXT", "GCS_READ_FILE", "PUBSUB_SUBSCRIPTION", "PUBSUB_TOPIC"}

GOOD_AND_BAD: dict[str, tuple[list[str], list[str]]] = {
    "config": (
        [
            "gs://my-bucket/telemetry/delivery.yaml",
            "gs://my-bucket/d.yml",
            "s3://cfg-bucket/a.json",
        ],
        [
            "delivery.yaml",
            "gs://my-bucket/",
            "gs://my-bucket/delivery.txt",
            "gs://My_Bucket/delivery.yaml",
            "gs://my-bucket/dir with space/d.yaml",
            "https://storage.googleapis.com/b/d.yaml",
        ],
    ),
    "input": (
        ["gs://my-bucket/events/2026/11/26/*.jsonl.gz", "s3://raw-events/x.jsonl"],
        ["/local/events.jsonl", "gs://my-bucket", "gs://b/x", "gs://my-bucket/a b"],
    ),
    "subscription": (
        ["projects/my-project/subscriptions/player-events", "projects/p-12345/subscriptions/a.b~c"],
        [
            "player-events",
            "projects/my-project/topics/player-events",
            "projects/My-Project/subscriptions/player-events",
            "projects/my-project/subscriptions/ab",
            "projects/my-project/subscriptions/1events",
        ],
    ),
    "topic": (
        ["projects/my-project/topics/player-events"],
        ["projects/my-project/subscriptions/player-events", "player-events", "projects/x/topics/t"],
    ),
    "timestamp_attribute": (
        ["ts", "event_time", "x-ts.ms"],
        ["", "googTs", "1ts", "with space"],
    ),
    "config_refresh_s": (
        ["60", "0.5", "3600", "1.25"],
        ["0", "0.0", "-5", "abc", "1e3", "60s"],
    ),
    "chunk_lines": (["5000", "1", "1000000"], ["0", "-1", "05", "5k", "10000000"]),
}


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    return json.loads((TEMPLATE / "metadata.json").read_text(encoding="utf-8"))


def test_metadata_describes_every_parameter(metadata: dict[str, Any]) -> None:
    assert metadata["name"] and len(metadata["description"]) > 40
    assert metadata["streaming"] is True and metadata["supportsAtLeastOnce"] is True
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == set(GOOD_AND_BAD), "every parameter needs good/bad examples here"
    for p in metadata["parameters"]:
        assert set(p) <= {"name", "label", "helpText", "paramType", "isOptional", "regexes"}, p
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]), p["name"]
        assert p["label"].strip() and len(p["helpText"]) > 30, p["name"]
        assert "Example: " in p["helpText"], f"{p['name']}: give an example value"
        assert p.get("paramType", "TEXT") in PARAM_TYPES, p["name"]
        assert isinstance(p["isOptional"], bool), p["name"]
        assert p["regexes"], f"{p['name']}: no validation regex"
    required = [p["name"] for p in metadata["parameters"] if not p["isOptional"]]
    assert required == ["config"]


@pytest.mark.parametrize("name", sorted(GOOD_AND_BAD))
def test_parameter_regexes_accept_good_values_and_refuse_bad_ones(
    metadata: dict[str, Any], name: str
) -> None:
    (param,) = [p for p in metadata["parameters"] if p["name"] == name]
    patterns = [re.compile(r) for r in param["regexes"]]  # Dataflow: every regex must match
    good, bad = GOOD_AND_BAD[name]
    for value in good:
        assert all(p.fullmatch(value) for p in patterns), f"{name} refuses {value!r}"
    for value in bad:
        assert not all(p.fullmatch(value) for p in patterns), f"{name} accepts {value!r}"


def test_every_parameter_is_a_flag_the_launcher_parses(metadata: dict[str, Any]) -> None:
    for p in metadata["parameters"]:
        value = GOOD_AND_BAD[p["name"]][0][0]
        options = PipelineOptions([f"--{p['name']}={value}"]).view_as(DeliveryOptions)
        parsed = getattr(options, p["name"])
        parsed = parsed[0] if isinstance(parsed, list) else parsed
        assert str(parsed) == value or float(parsed) == float(value), p["name"]


def dockerfile() -> tuple[str, dict[str, str], list[list[str]], str]:
    base, env, copies, workdir = "", {}, [], "/"
    args: dict[str, str] = {}
    for raw in (TEMPLATE / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            base = rest.strip()
        elif word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word == "WORKDIR":
            workdir = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.strip())
        elif word == "ENV":
            key, _, value = rest.partition("=")
            env[key] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value.strip('"'))
        elif word == "COPY":
            copies.append(rest.split())
    return base, env, copies, workdir


def test_dockerfile_points_the_launcher_at_files_it_copies() -> None:
    base, env, copies, workdir = dockerfile()
    assert base == BASE_IMAGE
    assert workdir == "/template"
    copied = {src.rstrip("/") for *sources, _ in copies for src in sources}
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    for var, expected in {
        "FLEX_TEMPLATE_PYTHON_PY_FILE": "templates/dataflow/main.py",
        "FLEX_TEMPLATE_PYTHON_SETUP_FILE": "setup.py",
    }.items():
        assert env[var] == f"{workdir}/{expected}", var
        relative = Path(env[var]).relative_to(workdir)
        assert (ROOT / relative).is_file(), f"{var}={env[var]}: no such file in the repo"
        assert any(relative.parts[0] == Path(src).parts[0] for src in copied), (
            f"{var}: {relative} is not copied into the image"
        )


# -- DataflowRunner --dry_run ------------------------------------------------------------------


@pytest.fixture
def no_google_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any Google credential lookup fails at once (a dry run must not need one)."""
    port = closed_port()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{port}")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))


def write_config(tmp: Path) -> Path:
    config = {
        "connectors": [
            {
                "id": "ops_qoe",
                "type": "file",
                "route": {"events": ["heartbeat", "error"]},
                "filter": {"metadata": {"allow": ["device.*"]}},
                "deliver": {
                    "path": "gs://my-bucket/ops",
                    "prefix": "{year}/{month}/{day}/{hour}/",
                    "format": "ndjson",
                    "batch": {"max_events": 500, "max_wait_s": 1, "shards": 4},
                },
            },
            {
                "id": "archive",
                "type": "s3",
                "deliver": {"bucket": "telemetry-archive", "format": "ndjson.gz"},
            },
        ],
        "dead_letter": {"path": "gs://my-bucket/dead_letter/"},
        "retry_location": "gs://my-bucket/retry/",
    }
    path = tmp / "delivery.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def dataflow_flags(tmp: Path, config: Path | None = None) -> list[str]:
    """DataflowRunner dry-run flags, for ``config`` (default: :func:`write_config`'s)."""
    return [
        "--runner=DataflowRunner",
        "--project=fake-project",
        "--region=europe-west1",
        "--temp_location=gs://fake-bucket/tmp",
        "--staging_location=gs://fake-bucket/staging",
        "--dry_run=True",
        "--sdk_location=container",
        f"--config={config or write_config(tmp)}",
    ]


def translate(argv: list[str]) -> Any:
    """Build with the launcher and run through DataflowRunner's dry run; the Job it made."""
    pipeline = launcher.build(argv)
    result = pipeline.run()
    result.wait_until_finish()
    assert result.state == "DONE"
    return result.job


def top_level(job: Any) -> set[str]:
    transforms = job.proto_pipeline.components.transforms
    return {t.unique_name for t in transforms.values() if "/" not in t.unique_name} - {""}


def urns(job: Any) -> set[str]:
    return {t.spec.urn for t in job.proto_pipeline.components.transforms.values()}


def names(job: Any) -> set[str]:
    return {t.unique_name for t in job.proto_pipeline.components.transforms.values()}


@pytest.mark.integration  # starts a process
def test_batch_job_translates_for_dataflow(tmp_path: Path, no_google_credentials: None) -> None:
    from google.cloud.dataflow_v1beta3 import JobType

    job = translate([*dataflow_flags(tmp_path), "--input=gs://my-bucket/events/*.jsonl.gz"])
    assert job.proto.type_ == JobType.JOB_TYPE_BATCH
    assert STAGES | {"DelayedRetries"} <= top_level(job)
    assert "beam:transform:pubsub_read:v1" not in urns(job)
    assert "beam:transform:group_into_batches:v1" not in urns(job)  # batch cuts, no state
    assert json.loads(job.json())["type"] == "JOB_TYPE_BATCH"


@pytest.mark.integration  # starts a process
def test_streaming_job_translates_for_dataflow(tmp_path: Path, no_google_credentials: None) -> None:
    from google.cloud.dataflow_v1beta3 import JobType

    argv = [
        *dataflow_flags(tmp_path),
        "--subscription=projects/fake-project/subscriptions/player-events",
        "--config_refresh_s=60",
    ]
    job = translate(argv)
    assert job.proto.type_ == JobType.JOB_TYPE_STREAMING
    assert STAGES | {"DelayedRetries"} <= top_level(job)
    # Dataflow's native Pub/Sub read and its GroupIntoBatches, one per connector.
    assert {"beam:transform:pubsub_read:v1", "beam:transform:group_into_batches:v1"} <= urns(job)
    assert {"Batch/Batch/ops_qoe", "Batch/Batch/archive"} <= names(job)
    options = job.options.get_all_options()
    assert options["streaming"] is True and options["config_refresh_s"] == 60


@pytest.mark.integration  # starts a process
def test_launcher_main_translates_and_refuses_bad_parameters(
    tmp_path: Path, no_google_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = dataflow_flags(tmp_path)
    assert launcher.main([*flags, "--topic=projects/fake-project/topics/player-events"]) == 0
    assert "job graph translated" in capsys.readouterr().out

    assert launcher.main(flags) == 2
    assert "exactly one of input" in capsys.readouterr().err
    both = ["--input=gs://b/x.jsonl", "--subscription=projects/fake-project/subscriptions/s1"]
    assert launcher.main([*flags, *both]) == 2
    assert "got input, subscription" in capsys.readouterr().err
    refresh = ["--input=gs://b/x.jsonl", "--config_refresh_s=60"]
    assert launcher.main([*flags, *refresh]) == 2
    assert "config_refresh_s applies to streaming" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text("connectors:\n  - {id: x, type: file, deliver: {path: out, fromat: ndjson}}\n")
    argv = [*flags[:-1], f"--config={bad}", "--input=gs://b/x.jsonl"]
    assert launcher.main(argv) == 2
    err = capsys.readouterr().err
    assert "fromat" in err and str(bad) in err


@pytest.mark.integration  # starts a process
def test_setup_file_sdist_carries_every_module_and_template(tmp_path: Path) -> None:
    """What ``--setup_file`` stages: Beam runs ``python setup.py sdist`` and workers install it."""
    import subprocess
    import sys
    import tarfile

    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (archive,) = tmp_path.glob("telemetry*-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {
        str(p.relative_to(ROOT))
        for package in ("beam_pipeline", "transforms", "templates")
        for p in (ROOT / package).rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    }
    assert wanted and not wanted - members, sorted(wanted - members)


@pytest.mark.integration  # starts a process
def test_a_dataflow_backfill_shuffles_records_and_a_local_one_spills_runs(
    tmp_path: Path, no_google_credentials: None
) -> None:
    # Runs spilled before the GroupByKey need one local disk: not on a cluster, where the
    # records themselves go through the shuffle to the worker that sorts and cuts them.
    job = translate([*dataflow_flags(tmp_path), "--input=gs://my-bucket/events/*.jsonl.gz"])
    assert any(n.startswith("Batch/CutGroup") for n in names(job))
    assert not any(n.startswith(("Batch/Runs", "Batch/CutEach")) for n in names(job))
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_pipeline.runners import shares_local_disk

    assert shares_local_disk(beam.Pipeline(runner=FnApiRunner()))
    flink = PipelineOptions(["--runner=FlinkRunner", "--flink_master=[local]"])
    assert shares_local_disk(beam.Pipeline(options=flink))
    cluster = PipelineOptions(["--runner=FlinkRunner", "--flink_master=flink.example:8081"])
    assert not shares_local_disk(beam.Pipeline(options=cluster))
