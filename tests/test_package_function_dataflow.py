"""``package.function`` on Dataflow: the user's package reaches the workers by ``--extra_package``.

README ("Getting the module to the workers") says a function in the team's own package
runs on Dataflow when the package, built, is passed with ``--extra_package``. Without
Google, in three steps of what a submission does:

1. ``examples/packaging_plugin`` (module ``my_team_packaging``) is built into a wheel by
   pip and installed from it into a folder put on ``sys.path``: the launching machine,
   where validation imports the function.
2. The Flex Template launcher (``templates/dataflow/main.py``) builds the job and
   translates it with DataflowRunner's ``--dry_run=True`` (tests/test_dataflow.py): the
   portable pipeline's environment lists the artifacts to stage.
3. Beam's own Dataflow client makes the job request from it
   (``DataflowApplicationClient.create_job_description``, what ``run()`` calls before the
   API call), staging into a local folder instead of ``gs://``: the files a real
   submission uploads to ``--staging_location``, and the request's worker pool lists them
   as packages. A Dataflow worker ``pip install``s the files named in
   ``extra_packages.txt`` before it runs any stage.

The other two cases, each with what the user sees:

* the function does not import where the job is launched: the launcher (exit 2) and
  ``validate`` (exit 1) refuse, naming the module and ``--extra_package`` as the fix,
  even when the wheel is given (it is staged for workers, never imported at launch);
* it imports where launched but is not staged: nothing at launch can tell (the job is
  translated, its request stages no such package), and on a worker without it every
  event the connector takes is a ``package_function_failed`` dead letter ("cannot be
  loaded on this worker"), while the other connectors deliver. Shown on real worker
  processes that lack the package: the FnApiRunner's ``multi_processing`` workers start
  with the job's own folder on their path, not the folder the test installed into.

Tier ``integration``: pip builds the wheel (its build isolation may reach the package
index) and one test runs the job in worker processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_pipeline.cli import main
from templates.dataflow import main as launcher
from tests.test_dataflow import dataflow_flags, no_google_credentials, translate  # noqa: F401
from transforms.rules import package as package_rules

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "packaging_plugin"
MODULE = "my_team_packaging"
FUNCTION = f"{MODULE}:to_amplitude"
INPUT = "--input=gs://my-bucket/events/*.jsonl.gz"


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def plugin_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/packaging_plugin built as the README says (``pip wheel --no-deps``)."""
    tmp = tmp_path_factory.mktemp("plugin-wheel")
    source = tmp / "src"
    shutil.copytree(PLUGIN, source)  # the build leaves build/ and *.egg-info beside it
    _pip("wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source))
    (wheel,) = (tmp / "dist").glob("my_team_packaging-*.whl")
    return wheel


@pytest.fixture
def not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No earlier test's import of the plugin is visible (module or loaded function)."""
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    # load_function keeps what it loaded for the process; this test starts without it.
    monkeypatch.setattr(package_rules, "_FUNCTIONS", {})


@pytest.fixture
def installed_plugin(
    tmp_path: Path, plugin_wheel: Path, monkeypatch: pytest.MonkeyPatch, not_loaded: None
) -> Iterator[Path]:
    """The wheel ``pip install``ed into a folder on this process's ``sys.path`` only."""
    assert importlib.util.find_spec(MODULE) is None, "must come from the wheel"
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(plugin_wheel))
    monkeypatch.syspath_prepend(str(target))
    yield target
    sys.modules.pop(MODULE, None)


def write_config(tmp: Path, out: str = "gs://my-bucket") -> Path:
    """An Amplitude connector packaged by the plugin's function, and a raw archive."""
    config = {
        "connectors": [
            {
                "id": "amplitude",
                "type": "file",
                "package": {"function": FUNCTION},
                "deliver": {"path": f"{out}/amplitude", "format": "ndjson"},
            },
            {"id": "archive", "type": "file", "deliver": {"path": f"{out}/archive"}},
        ],
        "dead_letter": {"path": f"{out}/dead_letter/"},
    }
    path = tmp / "delivery.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def staged_artifacts(job: Any) -> dict[str, str]:
    """What the translated job stages for its workers: {staged name: local file}."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2 as api

    staged = {}
    for env in job.proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            assert dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn, dep
            name = api.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            staged[name] = api.ArtifactFilePayload.FromString(dep.type_payload).path
    return staged


def job_request_packages(job: Any, staging: Path) -> list[dict[str, str]]:
    """Make the Dataflow job request as a submission does, staging into ``staging``.

    Returns the request's worker-pool packages (``environment.workerPools[0].packages``
    of the JSON sent to Dataflow), each ``{"name", "location"}``.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.internal import apiclient

    cloud = job.options.view_as(GoogleCloudOptions)
    cloud.staging_location = str(staging)  # a local folder: Beam copies instead of uploading
    cloud.no_auth = True  # the client is made, never called: no credential lookup
    staging.mkdir()
    apiclient.DataflowApplicationClient(job.options, str(staging)).create_job_description(job)
    packages: list[dict[str, str]] = json.loads(job.json())["environment"]["workerPools"][0][
        "packages"
    ]
    return packages


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_extra_package_stages_the_plugin_in_the_dataflow_job_request(
    tmp_path: Path,
    plugin_wheel: Path,
    installed_plugin: Path,
    no_google_credentials: None,  # noqa: F811
) -> None:
    config = write_config(tmp_path)
    job = translate([*dataflow_flags(tmp_path, config), INPUT, f"--extra_package={plugin_wheel}"])
    # Validation imported the function from the installed wheel, not from the repository.
    assert str(sys.modules[MODULE].__file__).startswith(str(installed_plugin))

    staged = staged_artifacts(job)
    assert sha256(staged[plugin_wheel.name]) == sha256(plugin_wheel)
    assert Path(staged["extra_packages.txt"]).read_text().split() == [plugin_wheel.name]

    staging = tmp_path / "staging"
    packages = job_request_packages(job, staging)
    assert {"name": plugin_wheel.name, "location": str(staging / plugin_wheel.name)} in packages
    assert {"name": "extra_packages.txt", "location": str(staging / "extra_packages.txt")} in (
        packages
    )
    # The bytes a worker installs are the wheel's, in the order extra_packages.txt gives.
    assert sha256(staging / plugin_wheel.name) == sha256(plugin_wheel)
    assert (staging / "extra_packages.txt").read_text().split() == [plugin_wheel.name]


def test_a_function_that_does_not_import_where_launched_is_refused(
    tmp_path: Path,
    plugin_wheel: Path,
    not_loaded: None,
    no_google_credentials: None,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert importlib.util.find_spec(MODULE) is None
    config = write_config(tmp_path)
    # The wheel is staged for the workers, never imported where the job is launched.
    argv = [*dataflow_flags(tmp_path, config), INPUT, f"--extra_package={plugin_wheel}"]
    assert launcher.main(argv) == 2
    err = capsys.readouterr().err
    where = "connectors[0](id=amplitude).package.function"
    assert f"{where}: cannot import module '{MODULE}'" in err, err
    assert "--extra_package" in err and str(config) in err, err

    assert main(["validate", "--config", str(config)]) == 1
    printed = capsys.readouterr()
    assert f"{where}: cannot import module '{MODULE}'" in printed.out + printed.err


def test_a_function_importable_where_launched_but_not_staged_dead_letters_on_workers(
    tmp_path: Path,
    installed_plugin: Path,
    no_google_credentials: None,  # noqa: F811
) -> None:
    # Launch: nothing refuses, and the request stages no package of the plugin.
    job = translate([*dataflow_flags(tmp_path, write_config(tmp_path)), INPUT])
    assert not [name for name in staged_artifacts(job) if MODULE in name]
    packages = job_request_packages(job, tmp_path / "staging")
    assert not [p for p in packages if MODULE in p["name"]], packages

    # Workers: processes that do not have the package, as Dataflow's would not.
    run = tmp_path / "run"
    run.mkdir()
    events: list[dict[str, Any]] = [
        {
            "event_id": f"e{n}",
            "session_id": f"s{n}",
            "event": {"type": "heartbeat", "timestamp": 1764136800123 + n},
            "metadata": {"user": {"id": f"u{n:05d}"}},
        }
        for n in range(40)
    ]
    source = run / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    summary_path = run / "summary.json"
    argv = ["run", "--config", str(write_config(run, str(run / "out"))), "--input", str(source)]
    argv += ["--summary-json", str(summary_path), "--no-progress"]
    argv += ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    assert main(argv) == 0  # validated here (the package is installed in this process)
    summary = json.loads(summary_path.read_text())
    assert summary["balanced"], summary
    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["amplitude"]["dead_lettered"] == len(events) and rows["amplitude"]["delivered"] == 0
    assert rows["archive"]["delivered"] == len(events)  # the other connector is unaffected
    assert not list((run / "out" / "amplitude").rglob("*.ndjson"))

    letters = [
        json.loads(line)
        for f in (run / "out" / "dead_letter").rglob("*.ndjson")
        for line in f.read_text().splitlines()
    ]
    assert sorted(d["event_id"] for d in letters) == sorted(e["event_id"] for e in events)
    for d in letters:
        assert (d["connector"], d["stage"], d["reason"]) == (
            "amplitude",
            "package",
            "package_function_failed",
        ), d
        assert f"package.function {FUNCTION} cannot be loaded on this worker" in d["error"], d
        assert f"cannot import module '{MODULE}'" in d["error"], d
