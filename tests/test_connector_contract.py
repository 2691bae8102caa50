"""The connector contract: every registered connector type passes the same checks.

Parametrized over the registry (:data:`transforms.connectors.CONNECTORS`), so a new
connector module is checked without editing this file; a registered type in no family
(:data:`FAMILIES`, or the module's own ``CONTRACT_FAMILY``) fails. Per type:

- its documented example (the ``- id: ...`` block of its module's docstring) validates
  with :func:`~transforms.config.parse_config`, and so do the docs' examples of it;
- an unknown key in its ``deliver`` is rejected, naming the key;
- its secrets (``${env:...}`` values) never appear in ``repr`` of its config or sink,
  in a :class:`DeliveryError` from a failing stand-in, or in the dead letters;
- HTTP APIs: 500 and 429 are retryable and 400 is not (the shared policy);
- warehouses (BigQuery): the same against a strict ``insertAll`` receiver, and a quota
  403 (``rateLimitExceeded``) is retryable;
- object stores: create-only (a second write of a batch finds it ``existed``);
- every event of a batch is accounted for (delivered + failed == batch size).

The check functions are plain functions so that ``docs/writing-a-connector.md``'s
example, installed as an entry point in a fresh interpreter, runs through the same ones
(:func:`test_a_new_module_needs_no_other_edit`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.receivers.apis import (
    DatadogLogsApi,
    ElasticsearchBulkApi,
    NewRelicEventApi,
    SplunkHecApi,
    WebhookApi,
)
from tests.receivers.base import Api, Receiver, Reply
from tests.receivers.bigquery import BigQueryInsertAllApi, quota_error
from tests.receivers.credentials import (
    DD_API_KEY,
    ES_API_KEY,
    NEW_RELIC_KEY,
    SPLUNK_TOKEN,
    WEBHOOK_AUTH,
)
from tests.standins.object_stores import CREATE_ONLY_KINDS, Store, closed_port
from transforms.config import TYPE_NAMES, ConfigError, Connector, parse_config
from transforms.connectors import CONNECTORS, LISTED_FIRST, connector_module
from transforms.connectors._policy import is_retryable_status
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink
from transforms.rules.records import Packaged
from transforms.rules.retry import Outcome, RetryPolicy, deliver_with_retries, settle_failures

pytest_plugins = [
    "tests.receivers.fixtures",
    "tests.standins.object_stores",
    "tests.standins.pubsub",
]

ROOT = Path(__file__).resolve().parents[1]

FAMILIES = {
    "file": ("file",),
    "object_store": ("s3", "gcs", "azure_blob"),
    "http_api": ("http", "datadog_logs", "splunk_hec", "new_relic", "elasticsearch"),
    "pubsub": ("pubsub",),
    "warehouse": ("bigquery",),
}
"""The built-in types by family; another module names its family in ``CONTRACT_FAMILY``."""

API_SECRETS = {
    "http": WEBHOOK_AUTH,
    "datadog_logs": DD_API_KEY,
    "splunk_hec": SPLUNK_TOKEN,
    "new_relic": NEW_RELIC_KEY,
    "elasticsearch": ES_API_KEY,
}
"""The credential each built-in API's stand-in accepts (its example's secrets get it)."""

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
UNKNOWN_KEY = "surely_not_a_field"
SCHEDULE = (300.0, 600.0)


# -- the registry and what each connector documents -------------------------------------------


def family_of(kind: str) -> str | None:
    """The family whose suite checks ``kind``, or None (a registered type nobody checks)."""
    for family, kinds in FAMILIES.items():
        if kind in kinds:
            return family
    declared = getattr(connector_module(CONNECTORS[kind]), "CONTRACT_FAMILY", None)
    return declared if declared in FAMILIES else None


def example_in(doc: str, kind: str | None = None) -> dict[str, Any]:
    """The first connector mapping (an indented ``- id: ...`` block) of a docstring."""
    lines = doc.splitlines()
    for start, line in enumerate(lines):
        if line.strip().startswith("- id:"):
            indent = len(line) - len(line.lstrip())
            block = [line]
            for more in lines[start + 1 :]:
                if more.strip() and len(more) - len(more.lstrip()) <= indent:
                    break
                block.append(more)
            (item,) = yaml.safe_load(textwrap.dedent("\n".join(block)))
            if kind is None or item.get("type") == kind:
                return dict(item)
    raise AssertionError(f"{kind or 'a connector'}: no '- id: ...' example documented")


def documented_example(kind: str) -> dict[str, Any]:
    """The example of ``kind`` that its module's docstring documents."""
    return example_in(connector_module(CONNECTORS[kind]).__doc__ or "", kind)


def docs_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """Every connector example in README.md and docs/*.md: (file, type, connector mapping)."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            try:
                loaded = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            items = loaded.get("connectors") if isinstance(loaded, dict) else loaded
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "type" in item and "deliver" in item:
                    out.append((path.name, str(item["type"]), item))
    return out


def secret_values(kind: str, example: dict[str, Any]) -> dict[str, str]:
    """A value for each ``${env:NAME}`` of the example (the stand-in's credential if any)."""
    names = ENV_REF.findall(json.dumps(example))
    value = API_SECRETS.get(kind)
    return {n: value or f"s3cr3t-{kind}-{n.lower()}-0f9e8d7c" for n in names}


def config_text(item: dict[str, Any]) -> str:
    return json.dumps({"connectors": [item], "dead_letter": {"path": "/tmp/dead_letter"}})


def packaged(n: int) -> list[Packaged]:
    """``n`` packaged heartbeats with what every template's output has."""
    out = []
    for i in range(n):
        record = {"event_id": f"e{i}", "event_type": "heartbeat", "eventType": "Heartbeat"}
        out.append(Packaged(f"e{i}", 1764136800123 + i, "heartbeat", record, {"event_id": f"e{i}"}))
    return out


# -- the checks ---------------------------------------------------------------------------------


def check_example_validates(item: dict[str, Any]) -> Connector:
    """The example parses as a whole config; returns its connector."""
    (connector,) = parse_config(config_text(item), "example").connectors
    assert connector.type == item["type"]
    connector.deliver_config  # noqa: B018 - the type's own schema accepts the section
    return connector


def check_unknown_key_rejected(item: dict[str, Any]) -> None:
    bad = {**item, "deliver": {**item["deliver"], UNKNOWN_KEY: 1}}
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(bad), "example")
    assert UNKNOWN_KEY in str(raised.value), str(raised.value)


def check_no_secret(secrets: Any, *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text[:300]}"


def open_sink(kind: str, deliver: dict[str, Any], cid: str = "c1") -> Sink:
    """The sink of a ``kind`` connector with this ``deliver`` section, validated and opened."""
    connector = check_example_validates({"id": cid, "type": kind, "deliver": deliver})
    sink = CONNECTORS[kind].make_sink(cid, connector.deliver_config)
    sink.open()
    return sink


def check_accounted(sink: Sink, batch: DeliveryBatch, secrets: Any) -> Outcome:
    """Every event ends delivered or failed, once; no failure shows a secret."""
    outcome = deliver_with_retries(sink, batch, RetryPolicy(immediate=1, sleep=lambda _: None))
    assert outcome.delivered + len(outcome.failed) == len(batch.items)
    assert {i.event_id for i, _, _ in outcome.failed} <= {i.event_id for i in batch.items}
    _, letters = settle_failures(batch, outcome, SCHEDULE, delayed_enabled=False)
    assert len(letters) == len(outcome.failed)
    check_no_secret(
        secrets,
        *(json.dumps(d.to_json_dict()) for d in letters),
        *(str(e) for _, e, _ in outcome.failed),
    )
    return outcome


def check_http_failures(sink: Sink, receiver: Receiver, secrets: Any) -> None:
    """500 and 429 are retryable, 400 is not (the shared policy); no error shows a secret.

    The failing answers echo the request's headers, as a careless server would.
    """
    for status in (500, 429, 400):
        receiver.clear_faults()
        receiver.reject_when(lambda _: True, status=status, echo_headers=True)
        batch = DeliveryBatch(sink.connector_id, "", packaged(3))
        with pytest.raises(DeliveryError) as raised:
            sink.write(batch)
        error = raised.value
        assert error.retryable is is_retryable_status(status), (status, str(error))
        check_no_secret(secrets, str(error), repr(error))
        outcome = check_accounted(sink, batch, secrets)
        assert outcome.delivered == 0
    receiver.clear_faults()


class AcceptAll(Api):
    """An API that accepts any request: 200, and each JSON or NDJSON record stored."""

    name = "accept_all"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        text = body.decode("utf-8", "replace").strip()
        try:
            parsed = (
                json.loads(text)
                if text.startswith("[")
                else [json.loads(x) for x in text.splitlines()]
            )
        except ValueError:
            parsed = [text]
        return Reply(200, b"{}", items=parsed, store=lambda: parsed)


def api_for(kind: str, example: dict[str, Any], path: str) -> Api:
    """The stand-in of a built-in API, configured as ``example`` says; else :class:`AcceptAll`."""
    deliver = example["deliver"]
    secret = API_SECRETS.get(kind, "")
    if kind == "http":
        headers = {
            k: (secret if ENV_REF.search(str(v)) else v)
            for k, v in deliver.get("headers", {}).items()
        }
        return WebhookApi(
            path, headers, deliver.get("body", "json_array"), deliver.get("method", "POST")
        )
    if kind == "datadog_logs":
        return DatadogLogsApi(secret)
    if kind == "splunk_hec":
        return SplunkHecApi(secret, indexes=(deliver.get("index") or "main", "main"))
    if kind == "new_relic":
        return NewRelicEventApi(deliver["account_id"], secret)
    if kind == "elasticsearch":
        return ElasticsearchBulkApi(api_key=secret)
    return AcceptAll()


# -- the suite ------------------------------------------------------------------------------------

ALL = list(CONNECTORS)


def of_family(family: str) -> list[str]:
    return [kind for kind in ALL if family_of(kind) == family]


def test_the_config_accepts_exactly_the_registry() -> None:
    assert tuple(CONNECTORS) == TYPE_NAMES
    assert set(LISTED_FIRST) <= set(CONNECTORS)


@pytest.mark.parametrize("kind", ALL)
def test_every_type_is_in_a_family(kind: str) -> None:
    assert family_of(kind) is not None, (
        f"{kind!r} is registered but no family suite checks it: add it to FAMILIES or set "
        f"CONTRACT_FAMILY in its module to one of {sorted(FAMILIES)}"
    )


@pytest.fixture
def example_env(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], tuple[dict[str, Any], dict[str, str]]]:
    """``example_env(kind)``: its documented example, its secrets exported."""

    def load(kind: str) -> tuple[dict[str, Any], dict[str, str]]:
        example = documented_example(kind)
        env = secret_values(kind, example)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return example, env

    return load


@pytest.mark.parametrize("kind", ALL)
def test_documented_example_validates_and_hides_its_secrets(kind: str, example_env: Any) -> None:
    example, env = example_env(kind)
    connector = check_example_validates(example)
    check_unknown_key_rejected(example)
    sink = CONNECTORS[kind].make_sink(connector.id, connector.deliver_config)
    check_no_secret(env.values(), repr(connector), repr(connector.deliver_config), repr(sink))


@pytest.mark.parametrize(
    ("source", "kind", "item"),
    [pytest.param(s, k, i, id=f"{s}:{i.get('id')}") for s, k, i in docs_examples()],
)
def test_docs_examples_validate(
    source: str, kind: str, item: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in secret_values(kind, item).items():
        monkeypatch.setenv(name, value)
    check_example_validates(item)


@pytest.mark.parametrize("kind", of_family("http_api"))
def test_http_api_contract(kind: str, example_env: Any, start_receiver: Any) -> None:
    example, env = example_env(kind)
    endpoint = str(example["deliver"]["endpoint"])
    path = re.sub(r"^https?://[^/]+", "", endpoint) or "/"
    receiver = start_receiver(api_for(kind, example, path))
    deliver = {**example["deliver"], "endpoint": receiver.url + (path if path != "/" else "")}
    deliver["timeouts"] = {"connect_s": 2, "read_s": 5}
    sink = open_sink(kind, deliver, example["id"])
    try:
        batch = DeliveryBatch(sink.connector_id, "", packaged(5))
        outcome = check_accounted(sink, batch, env.values())
        assert outcome.delivered == 5, [str(e) for _, e, _ in outcome.failed]
        check_http_failures(sink, receiver, [*env.values(), *receiver.api.secrets()])
    finally:
        sink.close()


@pytest.mark.parametrize("object_store", of_family("object_store"), indirect=True)
def test_object_store_contract(
    object_store: Store, example_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = object_store.kind
    example, env = example_env(kind)
    secrets = [*env.values(), *object_store.secrets]
    bucket = object_store.new_bucket()
    deliver = {**example["deliver"], **object_store.deliver(bucket)}
    deliver.pop("connection_string" if "account_url" in deliver else "account_url", None)
    sink = open_sink(kind, deliver, example["id"])
    check_no_secret(secrets, repr(sink))
    batch = DeliveryBatch(sink.connector_id, "", packaged(4))
    try:
        assert check_accounted(sink, batch, secrets).delivered == 4
        if kind in CREATE_ONLY_KINDS:
            assert sink.write(batch).existed, f"{kind}: a second write of a batch overwrote it"
    finally:
        sink.close()
    # A store that is down: a retryable error, every event accounted, no secret shown.
    down = f"http://127.0.0.1:{closed_port()}"
    for name, value in object_store.env_for(down).items():
        monkeypatch.setenv(name, value)
    failing = open_sink(kind, {**deliver, **object_store.deliver(bucket, down)}, example["id"])
    try:
        with pytest.raises(DeliveryError) as raised:
            failing.write(batch)
        assert raised.value.retryable, str(raised.value)
        check_no_secret(secrets, str(raised.value))
        assert check_accounted(failing, batch, secrets).delivered == 0
    finally:
        failing.close()


@pytest.mark.parametrize("kind", of_family("file"))
def test_file_contract(kind: str, example_env: Any, tmp_path: Path) -> None:
    example, env = example_env(kind)
    sink = open_sink(kind, {**example["deliver"], "path": str(tmp_path / "out")}, example["id"])
    batch = DeliveryBatch(sink.connector_id, "", packaged(4))
    assert check_accounted(sink, batch, env.values()).delivered == 4
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    failing = open_sink(kind, {**example["deliver"], "path": str(blocked / "out")}, example["id"])
    outcome = check_accounted(failing, batch, env.values())
    assert outcome.delivered == 0 and len(outcome.failed) == 4


@pytest.mark.parametrize("kind", of_family("pubsub"))
def test_pubsub_contract(kind: str, example_env: Any, pubsub_env: Any) -> None:
    example, env = example_env(kind)
    topic = pubsub_env.create_topic("contract")
    deliver = {**example["deliver"], "topic": topic, "timeouts": {"connect_s": 2, "read_s": 5}}
    sink = open_sink(kind, deliver, example["id"])
    try:
        batch = DeliveryBatch(sink.connector_id, "", packaged(4))
        assert check_accounted(sink, batch, env.values()).delivered == 4
        missing = {**deliver, "topic": topic + "-missing"}
        failing = open_sink(kind, missing, example["id"])
        try:
            with pytest.raises(DeliveryError) as raised:
                failing.write(batch)
            assert not raised.value.retryable, str(raised.value)  # NOT_FOUND: a config error
            assert check_accounted(failing, batch, env.values()).delivered == 0
        finally:
            failing.close()
    finally:
        sink.close()


@pytest.mark.parametrize("kind", of_family("warehouse"))
def test_warehouse_contract(kind: str, example_env: Any, start_receiver: Any) -> None:
    example, env = example_env(kind)
    table = example["deliver"]["table"]
    columns = [(c, "STRING", "NULLABLE") for c in ("event_id", "event_type", "eventType")]
    receiver = start_receiver(BigQueryInsertAllApi({table: columns}))
    deliver = {**example["deliver"], "endpoint": receiver.url}
    deliver["timeouts"] = {"connect_s": 2, "read_s": 5}
    sink = open_sink(kind, deliver, example["id"])
    try:
        batch = DeliveryBatch(sink.connector_id, "", packaged(5))
        outcome = check_accounted(sink, batch, env.values())
        assert outcome.delivered == 5, [str(e) for _, e, _ in outcome.failed]
        check_http_failures(sink, receiver, [*env.values(), *receiver.api.secrets()])
        receiver.reject_when(lambda _: True, status=403, body=quota_error())
        with pytest.raises(DeliveryError) as raised:
            sink.write(batch)
        assert raised.value.retryable, str(raised.value)
        assert check_accounted(sink, batch, env.values()).delivered == 0
    finally:
        sink.close()


# -- a new connector: one module, no other edit ----------------------------------------------------


def doc_blocks() -> list[str]:
    """The python blocks of docs/writing-a-connector.md: the module, then its test."""
    text = (ROOT / "docs" / "writing-a-connector.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """The doc's module and test, installed as a distribution with an entry point."""
    module, test = doc_blocks()
    (tmp_path / "line_hook.py").write_text(module)
    (tmp_path / "test_line_hook.py").write_text(test)
    info = tmp_path / "line_hook-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: line-hook\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[telemetry_delivery.connectors]\nline_hook = line_hook\n"
    )
    yield tmp_path


def run(argv: list[str], plugin: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(plugin or ""), str(ROOT)) if p),
    }
    env["LINE_HOOK_TOKEN"] = "tok-0123456789"
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.integration  # starts a process
def test_a_new_module_needs_no_other_edit(plugin_dir: Path) -> None:
    """The doc's connector, installed beside the project: validate accepts its type, and
    this suite and the doc's own test run for it. Without it, validate rejects the type."""
    config = plugin_dir / "delivery.yaml"
    config.write_text(config_text(example_in(doc_blocks()[0].split('"""')[1])))
    validate = ["-m", "beam_pipeline", "validate", "--config", str(config)]

    without = run(validate, None, ROOT)
    assert without.returncode != 0 and "line_hook" not in without.stdout, without.stdout

    accepted = run(validate, plugin_dir, ROOT)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "lines (line_hook)" in accepted.stdout

    pytest = ["-m", "pytest", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"), "-rA"]
    this_suite = [str(Path(__file__)), "-k", "line_hook and not new_module"]
    for argv, expected in (
        (this_suite, SUITE_CHECKS),
        ([str(plugin_dir / "test_line_hook.py")], 1),
    ):
        done = run([*pytest, *argv], plugin_dir, ROOT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        passed = re.findall(r"^PASSED .*$", done.stdout, re.M)
        assert len(passed) == expected, done.stdout[-3000:]


SUITE_CHECKS = 3
"""The suite's tests of one HTTP API type: its family, its example, its family contract."""
