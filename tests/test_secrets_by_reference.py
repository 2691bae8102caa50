"""Issue 19 items 11 and 16: config numbers are finite and bounded; secrets travel as
references and are read on the workers.

The pickling test is the one a leak would fail: it builds the real batch graph, takes
every DoFn payload out of the pipeline proto (what a runner stages), decodes it and
looks for each secret value's bytes.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import http.server
import json
import pickle
import threading
import zlib
from pathlib import Path
from typing import Any, ClassVar

import apache_beam as beam
import boto3
import pytest

from beam_pipeline.pipeline import build_pipeline
from tests.jobs import run_job
from tests.receivers.base import Receiver
from tests.receivers.credentials import WEBHOOK_AUTH, WEBHOOK_PATH, make_api
from tests.test_dataflow import (
    dataflow_flags,
    no_google_credentials,  # noqa: F401 (a fixture, used by name)
    translate,
)
from transforms.config import ConfigError, parse_config
from transforms.connectors.secrets import SecretError, SecretRef, resolve

pytest_plugins = ["tests.standins.object_stores", "tests.receivers.fixtures"]

DD_KEY = "dd-secret-value-5d1f0c3a9b"
HASH_KEY = "hash-key-secret-77e2c1"
AWS_TOKEN = WEBHOOK_AUTH  # what the webhook stand-in accepts


def _config(out: Path, hook_url: str = "http://127.0.0.1:9", header: str = "${env:T_DD}") -> str:
    return f"""
connectors:
  - id: ops
    type: datadog_logs
    package: {{template: datadog_logs}}
    deliver: {{endpoint: "http://127.0.0.1:9", api_key: "${{env:T_DD}}"}}
  - id: hook
    type: http
    filter: {{hash: {{paths: [metadata.user.id], key: "${{env:T_HASH}}"}}}}
    deliver:
      endpoint: "{hook_url}{WEBHOOK_PATH}"
      headers: {{Authorization: "{header}", X-Source: telemetry}}
      body: ndjson
  - id: archive
    type: file
    deliver: {{path: "{out}/archive"}}
dead_letter: {{path: "{out}/dead_letter"}}
"""


@pytest.fixture
def secret_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_DD", DD_KEY)
    monkeypatch.setenv("T_HASH", HASH_KEY)


def _layers(blob: bytes) -> list[bytes]:
    """``blob`` and what it unwraps to: base64, then bz2 or zlib (Beam's pickler's layers)."""
    out = [blob]
    with contextlib.suppress(ValueError):
        out.append(base64.b64decode(blob, validate=True))
    for data in list(out):
        for unpack in (bz2.decompress, zlib.decompress):
            with contextlib.suppress(OSError, ValueError, zlib.error):
                out.append(unpack(data))
    return out


def _decoded(proto: Any) -> bytes:
    """The proto's bytes plus every ParDo's DoFn payload unwrapped to its pickle."""
    from apache_beam.portability.api import beam_runner_api_pb2

    parts = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        if transform.spec.urn != "beam:transform:pardo:v1":
            continue
        pardo = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        parts.extend(_layers(pardo.do_fn.payload))
    return b"\n".join(parts)


def test_no_secret_value_in_the_job_graph(tmp_path: Path, secret_vars: None) -> None:
    config = parse_config(_config(tmp_path))
    assert DD_KEY.encode() not in pickle.dumps(config)
    p = beam.Pipeline()
    build_pipeline(p, config, [str(tmp_path / "none.jsonl")])
    graph = _decoded(p.to_runner_api())
    # The check can see a secret: the DoFns are really in there, references and all.
    assert b"${env:T_DD}" in graph and b"_DeliverBatch" in graph
    for secret in (DD_KEY, HASH_KEY):
        assert secret.encode() not in graph


def test_a_reference_prints_pickles_and_compares_as_itself(monkeypatch: Any) -> None:
    monkeypatch.setenv("T_X", "value-1")
    ref = SecretRef("${env:T_X}")
    assert ref.get_secret_value() == "value-1"
    assert "value-1" not in repr(ref) and "value-1" not in str(ref)
    assert b"value-1" not in pickle.dumps(ref)
    monkeypatch.setenv("T_X", "value-2")  # read where it is used: a worker's own value
    assert pickle.loads(pickle.dumps(ref)).get_secret_value() == "value-2"
    assert ref == SecretRef("${env:T_X}") and ref != SecretRef("${env:T_Y}")
    monkeypatch.delenv("T_X")
    with pytest.raises(SecretError, match="T_X is not set on this worker"):
        resolve("${env:T_X}")


@pytest.mark.parametrize(
    "text",
    [
        "${env:}",
        "${env:A-B}",
        "${vault:x}",
        "prefix ${env:A}",
        "${gcp-secret:my-secret}",
    ],
)
def test_malformed_references_are_config_errors(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"headers\.Authorization"):
        parse_config(_config(tmp_path, header=text))


def test_aws_secrets_manager_reference_is_read_on_the_worker(
    tmp_path: Path,
    secret_vars: None,
    moto_server: Any,
    start_receiver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"hook-token-{tmp_path.name}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=AWS_TOKEN)
    hook: Receiver = start_receiver(make_api("http"))
    (tmp_path / "delivery.yaml").write_text(
        _config(tmp_path, hook.url, header=f"${{aws-secret:{name}}}")
    )
    events = [
        {"event_id": f"e{n}", "event": {"type": "heartbeat"}, "metadata": {"user": {"id": "u"}}}
        for n in range(3)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    code, summary = run_job(
        tmp_path / "delivery.yaml", tmp_path / "in.jsonl", tmp_path / "summary.json"
    )
    rows = {r["id"]: r for r in summary["connectors"]}
    assert code == 0, summary
    assert rows["hook"]["delivered"] == 3, rows["hook"]
    requests, _ = hook.snapshot()
    assert requests and all(r.header("Authorization") == AWS_TOKEN for r in requests)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("retry: {delayed_schedule_s: [.nan]}", None),
        ("retry: {delayed_schedule_s: [.inf]}", None),
        ("retry: {delayed_schedule_s: [-1]}", None),
        ("deliver: {path: ./o, batch: {max_wait_s: .inf}}", None),
        ("deliver: {path: ./o, batch: {max_wait_s: .nan}}", None),
        ("deliver: {path: ./o, batch: {max_wait_s: 1e300}}", None),
        ("route: {sample_sessions: .nan}", None),
    ],
)
def test_config_numbers_are_finite_and_bounded(path: str, value: Any) -> None:
    text = f"""
connectors:
  - id: ops
    type: file
    {path if path.startswith("deliver") else path + chr(10) + "    deliver: {path: ./o}"}
dead_letter: {{path: ./dl}}
"""
    with pytest.raises(ConfigError, match=r"connectors\[0\]\(id=ops\)"):
        parse_config(text)


@pytest.mark.integration  # starts a process
@pytest.mark.usefixtures("no_google_credentials")
def test_no_secret_value_in_the_dataflow_job(tmp_path: Path, secret_vars: None) -> None:
    config = tmp_path / "delivery.yaml"
    config.write_text(_config(tmp_path).replace(f"{tmp_path}/", "gs://my-bucket/"))
    flags = dataflow_flags(tmp_path, config)
    job = translate([*flags, "--input=gs://my-bucket/events/*.jsonl.gz"])
    graph = _decoded(job.proto_pipeline) + job.json().encode()
    assert b"${env:T_DD}" in graph
    for secret in (DD_KEY, HASH_KEY):
        assert secret.encode() not in graph


class _SecretManager(http.server.BaseHTTPRequestHandler):
    """Google Secret Manager's REST ``versions.access``, as documented: ``GET
    /v1/projects/P/secrets/S/versions/V:access`` -> ``{"name": ..., "payload": {"data":
    base64, "dataCrc32c": ...}}``; 404 for any other secret (no stand-in exists)."""

    secrets: ClassVar[dict[str, str]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        name = self.path.removeprefix("/v1/").removesuffix(":access")
        self.seen.append(self.path)
        value = self.secrets.get(name)
        if value is None or not self.path.endswith(":access"):
            self.send_response(404)
            self.end_headers()
            return
        data = value.encode()
        body = json.dumps(
            {
                "name": name,
                "payload": {
                    "data": base64.b64encode(data).decode(),
                    "dataCrc32c": str(zlib.crc32(data)),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_gcp_secret_manager_reference_is_read_over_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "projects/p1/secrets/dd-key/versions/3"
    _SecretManager.secrets = {name: "gcp-held-value-41"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SecretManager)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SECRET_MANAGER_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        ref = SecretRef(f"${{gcp-secret:{name}}}")
        assert b"gcp-held-value-41" not in pickle.dumps(ref)
        assert ref.get_secret_value() == "gcp-held-value-41"
        assert _SecretManager.seen[-1] == f"/v1/{name}:access"
        with pytest.raises(SecretError, match="answered 404") as refused:
            resolve("${gcp-secret:projects/p1/secrets/other/versions/1}")
        assert "gcp-held-value-41" not in str(refused.value)
    finally:
        server.shutdown()


def test_an_endpoint_with_a_secret_part_keeps_its_reference(
    tmp_path: Path, secret_vars: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _config(tmp_path).replace(
        'endpoint: "http://127.0.0.1:9", api_key',
        'endpoint: "http://127.0.0.1:9/t/${env:T_DD}", api_key',
    )
    config = parse_config(text)
    deliver = config.connectors[0].deliver_config
    assert deliver.endpoint == "http://127.0.0.1:9/t/${env:T_DD}"
    assert DD_KEY.encode() not in pickle.dumps(config)
    assert deliver.resolve()[0] == f"http://127.0.0.1:9/t/{DD_KEY}"
    monkeypatch.delenv("T_DD")
    with pytest.raises(ConfigError, match="T_DD is not set"):
        parse_config(text)
