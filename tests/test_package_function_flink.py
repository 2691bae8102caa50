"""The escape hatch on Flink, with the function in a separate installed package.

``examples/packaging_plugin`` (the package ``my-team-packaging``, module
``my_team_packaging``) is built and installed by pip into a folder of this test, which is
then put on ``sys.path``: what ``pip install`` does for a user. Nothing of the job's own
tree provides the module (the test checks it cannot be imported before). Then ``run
--runner=FlinkRunner --flink_master=[local] --environment_type=LOOPBACK``: the job server
(a JVM) runs the graph on an embedded Flink cluster, and the Python stages run in SDK
workers inside this process (LOOPBACK), so the installed package is what they import.
The config names the functions as strings; validation imports them here, the Package
stage again on the worker, on first use.

Every expected record below is written by hand from the package's docstrings and the
README, never computed with the package or transforms.rules.
"""

from __future__ import annotations

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
from tests.test_flink import flink_flags, flink_job_server_jar  # noqa: F401 (a fixture)

pytestmark = pytest.mark.flink

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "packaging_plugin"

EVENTS: list[dict[str, Any]] = [
    {
        "event_id": "f1",
        "session_id": "s-0001",
        "event": {"type": "heartbeat", "timestamp": 1764136800123},
        "metadata": {
            "user": {"id": "u12345"},
            "device": {"os": "ios"},
            "geo": {"country_code": "US"},
        },
        "fluxdata": {"rendition_video_bitrate_kbps": 4500},
    },
    {
        "event_id": "f2",
        "session_id": "sess-2",
        "event": {"type": "error", "timestamp": "2025-11-26T06:00:01Z"},
        "metadata": {
            "user": {"id": "u1"},  # too short for Amplitude: the session is the device
            "device": {"os": "android"},
            "error": {"codes": [4001, 5002]},
        },
        "fluxdata": {"num_errors": 2},
    },
    {  # neither a user nor a session: to_amplitude drops it
        "event_id": "f3",
        "event": {"type": "heartbeat", "timestamp": 1764136802000},
        "metadata": {"device": {"os": "Roku"}},
    },
    {
        "event_id": "f4",
        "event": {"type": "error"},
        "metadata": {"user": {"id": "u77777"}, "error": {"code": 7}},
    },
]

AMPLITUDE = [
    {
        "event_type": "heartbeat",
        "insert_id": "f1",
        "user_id": "u12345",
        "time": 1764136800123,
        "platform": "iOS",
        "os_name": "ios",
        "country": "US",
        "event_properties": {"rendition_video_bitrate_kbps": 4500, "player_session_id": "s-0001"},
    },
    {
        "event_type": "error",
        "insert_id": "f2",
        "device_id": "sess-2",
        "time": 1764136801000,
        "platform": "Android",
        "os_name": "android",
        "event_properties": {"num_errors": 2, "player_session_id": "sess-2"},
    },
    {"event_type": "error", "insert_id": "f4", "user_id": "u77777", "event_properties": {}},
]

ERRORS = [
    {"event_id": "f2", "error_code": 4001},
    {"event_id": "f2", "error_code": 5002},
    {"event_id": "f4", "error_code": 7},
]


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``pip install`` of examples/packaging_plugin into a folder on ``sys.path``."""
    assert importlib.util.find_spec("my_team_packaging") is None, "must come from the package"
    source = tmp_path / "plugin-src"
    shutil.copytree(PLUGIN, source)  # pip's build leaves build/ and *.egg-info beside it
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), source],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"pip could not install the plugin:\n{done.stdout}{done.stderr}"
    assert (target / "my_team_packaging" / "__init__.py").is_file()
    monkeypatch.syspath_prepend(str(target))
    yield target
    sys.modules.pop("my_team_packaging", None)


def read(folder: Path) -> tuple[list[dict[str, Any]], int]:
    files = sorted(folder.rglob("*.ndjson"))
    return [json.loads(x) for f in files for x in f.read_text().splitlines()], len(files)


def test_package_function_from_an_installed_package_on_flink(
    tmp_path: Path,
    installed_plugin: Path,
    flink_job_server_jar: str,  # noqa: F811
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    out = tmp_path / "out"
    config = tmp_path / "delivery.yaml"
    config.write_text(
        f"""
connectors:
  - id: amplitude
    type: file
    package: {{function: "my_team_packaging:to_amplitude"}}
    deliver: {{path: "{out}/amplitude"}}
  - id: errors
    type: file
    package: {{function: "my_team_packaging:split_errors"}}
    deliver: {{path: "{out}/errors", batch: {{max_events: 1}}}}
dead_letter: {{path: "{out}/dead_letter"}}
"""
    )
    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "run",
            "--config",
            str(config),
            "--input",
            str(source),
            "--summary-json",
            str(summary_path),
            "--no-progress",
            *flink_flags(flink_job_server_jar),
        ]
    )
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["balanced"], summary
    assert str(sys.modules["my_team_packaging"].__file__).startswith(str(installed_plugin))

    amplitude, _ = read(out / "amplitude")
    assert sorted(amplitude, key=lambda r: r["insert_id"]) == AMPLITUDE
    errors, files = read(out / "errors")
    key = lambda r: (r["event_id"], r["error_code"])  # noqa: E731
    assert sorted(errors, key=key) == ERRORS
    assert files == 3  # f2's two records are two objects (f2#0, f2#1), not one name twice

    rows = {r["id"]: r for r in summary["connectors"]}
    assert rows["amplitude"]["routed"] == 4 and rows["amplitude"]["dropped"] == 1
    assert rows["amplitude"]["delivered"] == 3 and rows["amplitude"]["in"] == 4
    assert rows["errors"]["dropped"] == 2 and rows["errors"]["fanned_out"] == 1
    assert rows["errors"]["in"] == 5 and rows["errors"]["delivered"] == 3
    assert not list((out / "dead_letter").rglob("*.ndjson"))
