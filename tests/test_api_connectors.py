"""The API connectors' compliance suite: one set of checks, parametrized over every API.

Each test runs the real job (``beam_pipeline.cli.main(["run", ...])`` on Beam's
FnApiRunner) on a generated input file against real stand-ins: the HTTP receivers in
:mod:`tests.receivers` (Datadog Logs v2, Splunk HEC, New Relic Event API, Elasticsearch
``_bulk``, a webhook) and Google's Pub/Sub emulator. What each receiver got is compared
with what the same rules (route, filter, package: :func:`beam_pipeline.dryrun.explain`)
say the connector must get: exactly those records, each exactly once, with the right
auth and envelope. Faults (5xx, 429 + Retry-After, 400, hangs, outages) are injected by
the receivers; dead letters and the run summary must account for every routed event.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from beam_pipeline.cli import main
from beam_pipeline.dryrun import explain
from examples.generate_events import generate
from tests.receivers.apis import ItemFault
from tests.receivers.base import Receiver
from tests.receivers.credentials import (
    API_KINDS,
    DD_API_KEY,
    ES_API_KEY,
    NEW_RELIC_ACCOUNT,
    NEW_RELIC_KEY,
    SECRET_ENV,
    SPLUNK_TOKEN,
    WEBHOOK_AUTH,
    WEBHOOK_PATH,
)
from transforms.config import ConfigError, compile_connectors, parse_config
from transforms.rules.events import parse_line

if TYPE_CHECKING:
    from tests.standins.pubsub import PubSubEmulator

pytest_plugins = ["tests.receivers.fixtures", "tests.standins.pubsub"]

N_EVENTS = 2000
N_INVALID = 6
ALL_KINDS = (*API_KINDS, "pubsub")

# Fast failure settings for fault tests: short timeouts, one immediate retry.
FAST = "timeouts: {connect_s: 2, read_s: 0.5}"


# -- the connectors under test ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One connector type: its config (route, filter, package, deliver) and how to read
    back what its destination received."""

    kind: str
    rules: str  # route/filter/package YAML (inline mappings)
    deliver: str  # extra deliver keys (inline mapping body), beside endpoint and secrets


CASES: dict[str, Case] = {
    "http": Case(
        "http",
        "route: {events: [playback_start, playback_complete, playback_stop, error]}\n"
        '    filter: {metadata: {deny: [network, "user.id"]}}\n'
        "    package: {template: flat_event}",
        "body: ndjson, compression: gzip, method: POST",
    ),
    "datadog_logs": Case(
        "datadog_logs",
        "route: {events: [heartbeat, error, buffer_start, buffer_end],"
        " when: [{field: metadata.geo.country_code, op: in, value: [US, CA, GB, DE]}]}\n"
        '    filter: {metadata: {allow: ["device.*", "player.*", content.title,'
        " geo.country_code]}, fluxdata: {deny: [playhead_position_sec]}}\n"
        "    package: {template: datadog_logs, values: {event.type: {buffer_start: rebuffer}}}",
        "compression: gzip",
    ),
    "splunk_hec": Case(
        "splunk_hec",
        "route: {exclude_events: [heartbeat]}\n"
        "    filter: {metadata: {deny: [network]}}\n"
        "    package: {template: splunk_hec, rename: {session_id: sid}}",
        "index: video",
    ),
    "new_relic": Case(
        "new_relic",
        "route: {sample_sessions: 0.5}\n"
        "    filter: {fluxdata: {allow: [bandwidth_kbps, rendition_video_bitrate_kbps]}}\n"
        "    package: {template: new_relic}",
        "compression: gzip",
    ),
    "elasticsearch": Case(
        "elasticsearch",
        "route: {}\n    filter: {metadata: {deny: [user]}}\n    package: {template: elasticsearch}",
        "index: video-events",
    ),
    "pubsub": Case(
        "pubsub",
        "route: {events: [error, buffer_start, buffer_end, seek]}\n"
        "    package: {template: flat_event}",
        "",
    ),
}


class Target:
    """Where one connector delivers, and how to read back what arrived there."""

    def __init__(
        self, kind: str, receiver: Receiver | None = None, emulator: PubSubEmulator | None = None
    ):
        self.kind = kind
        self.receiver = receiver
        self.emulator = emulator
        if emulator is not None:
            self.topic = emulator.create_topic("video")
            self.subscription = emulator.create_subscription(self.topic)

    def deliver(self, extra: str = "", max_events: int = 250) -> str:
        """The connector's ``deliver`` section as an inline YAML mapping."""
        url = self.receiver.url if self.receiver else ""
        base = {
            "http": f"endpoint: '{url}{WEBHOOK_PATH}', headers: {{"
            "Authorization: '${env:TEST_WEBHOOK_AUTH}', X-Source: telemetry}",
            "datadog_logs": f"endpoint: '{url}', api_key: '${{env:TEST_DD_API_KEY}}'",
            "splunk_hec": f"endpoint: '{url}', token: '${{env:TEST_SPLUNK_TOKEN}}'",
            "new_relic": f"endpoint: '{url}', account_id: {NEW_RELIC_ACCOUNT},"
            " api_key: '${env:TEST_NEW_RELIC_KEY}'",
            "elasticsearch": f"endpoint: '{url}', api_key: '${{env:TEST_ES_API_KEY}}'",
            "pubsub": f"topic: {getattr(self, 'topic', '')}",
        }[self.kind]
        batch = f"batch: {{max_events: {max_events}, max_wait_s: 1}}"
        parts = [base, CASES[self.kind].deliver, batch, extra]
        return "{" + ", ".join(p for p in parts if p) + "}"

    def received(self, expected_count: int = 0) -> list[tuple[str, Any]]:
        """Every delivered record as (event_id, packaged record), unwrapped from the
        API's envelope, after checking the envelope."""
        if self.kind == "pubsub":
            assert self.emulator is not None
            out = []
            for m in self.emulator.pull(self.subscription, expected_count):
                attrs = dict(m.attributes)
                record = json.loads(m.data)
                assert set(attrs) == {"event_type", "connector", "event_id"}
                assert attrs["connector"] == "c_pubsub"
                assert attrs["event_id"] == record["event_id"]
                out.append((attrs["event_id"], record))
            return out
        assert self.receiver is not None
        _, items = self.receiver.snapshot()
        return [unwrap(self.kind, item) for item in items]

    def check_requests(self) -> None:
        """Every request carried the right auth, media type and encoding."""
        if self.receiver is None:
            return
        requests, _ = self.receiver.snapshot()
        assert requests, f"{self.kind}: no request arrived"
        for req in requests:
            check_request(self.kind, req)


def unwrap(kind: str, item: Any) -> tuple[str, Any]:
    if kind == "splunk_hec":
        assert set(item) == {"time", "source", "sourcetype", "index", "event"}
        assert (item["index"], item["source"], item["sourcetype"]) == (
            "video",
            "video-telemetry",
            "_json",
        )
        return item["event"]["event_id"], item
    if kind == "elasticsearch":
        assert item["_index"] == "video-events"
        assert item["doc"]["event_id"] == item["_id"]
        return item["_id"], item["doc"]
    if kind == "new_relic":
        assert all(not isinstance(v, (dict, list)) for v in item.values()), "not flat"
    return item["event_id"], item


def check_request(kind: str, req: Any) -> None:
    h = req.header
    if kind == "http":
        assert (req.method, req.path) == ("POST", WEBHOOK_PATH)
        assert h("Authorization") == WEBHOOK_AUTH and h("X-Source") == "telemetry"
        assert h("Content-Type") == "application/x-ndjson" and h("Content-Encoding") == "gzip"
    elif kind == "datadog_logs":
        assert (req.method, req.path) == ("POST", "/api/v2/logs")
        assert h("DD-API-KEY") == DD_API_KEY
        assert h("Content-Type") == "application/json" and h("Content-Encoding") == "gzip"
    elif kind == "splunk_hec":
        assert (req.method, req.path) == ("POST", "/services/collector/event")
        assert h("Authorization") == f"Splunk {SPLUNK_TOKEN}"
        assert h("Content-Encoding") == "gzip"
    elif kind == "new_relic":
        assert (req.method, req.path) == ("POST", f"/v1/accounts/{NEW_RELIC_ACCOUNT}/events")
        assert h("Api-Key") == NEW_RELIC_KEY
        assert h("Content-Encoding") == "gzip" and len(req.body) <= 1_000_000
    elif kind == "elasticsearch":
        assert (req.method, req.path) == ("POST", "/_bulk")
        assert h("Authorization") == f"ApiKey {ES_API_KEY}"
        assert h("Content-Type") == "application/x-ndjson"


def expected_for(kind: str, record: Any, event: dict[str, Any]) -> Any:
    """What the destination stores for a packaged record (the API's fixed envelope)."""
    if kind == "splunk_hec":
        from transforms.rules.events import event_time_ms

        ms = event_time_ms(event)
        wrapped: dict[str, Any] = {} if ms is None else {"time": ms / 1000}
        wrapped.update(source="video-telemetry", sourcetype="_json", index="video")
        wrapped["event"] = record
        return wrapped
    return record


def event_ids(kind: str, items: list[Any]) -> list[str]:
    """The event ids of a request's parsed items."""
    return [unwrap(kind, item)[0] for item in items]


# -- running the job ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A generated input file (with invalid lines) and its valid events."""
    path = tmp_path_factory.mktemp("input") / "events.jsonl"
    lines = list(generate(N_EVENTS, seed=20251126, invalid=N_INVALID, iso_every=97))
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = [e for e in (parse_line(line) for line in lines if line) if isinstance(e, dict)]
    assert len(events) == N_EVENTS
    return path, events


@pytest.fixture
def targets(
    request: pytest.FixtureRequest,
    receivers: dict[str, Receiver],
    secret_env: dict[str, str],
) -> Callable[[str], Target]:
    """``targets(kind)``: the receiver (or emulator topic) of one connector type."""
    made: dict[str, Target] = {}

    def get(kind: str) -> Target:
        if kind not in made:
            if kind == "pubsub":
                emulator = request.getfixturevalue("pubsub_env")
                made[kind] = Target(kind, emulator=emulator)
            else:
                made[kind] = Target(kind, receiver=receivers[kind])
        return made[kind]

    return get


def config_text(
    tmp: Path,
    targets: dict[str, Target],
    extra: dict[str, str] | None = None,
    retry: str = "{immediate: 3}",
    max_events: int = 250,
) -> str:
    blocks = []
    for kind, target in targets.items():
        case = CASES[kind]
        blocks.append(
            f"  - id: c_{kind}\n    type: {kind}\n    {case.rules}\n"
            f"    deliver: {target.deliver((extra or {}).get(kind, ''), max_events)}\n"
            f"    retry: {retry}\n"
        )
    return "connectors:\n" + "".join(blocks) + f"dead_letter: {{path: '{tmp}/dead'}}\n"


@dataclass
class Run:
    summary: dict[str, Any]
    rows: dict[str, dict[str, Any]]
    config_yaml: str
    dead: list[dict[str, Any]]
    output: str

    def dead_for(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.dead if d["connector"] == f"c_{kind}"]


def run_job(
    tmp: Path, source: Path, text: str, capfd: pytest.CaptureFixture[str] | None = None
) -> Run:
    cfg = tmp / "delivery.yaml"
    cfg.write_text(text)
    summary_path = tmp / "summary.json"
    code = main(
        ["run", "--config", str(cfg), "--input", str(source), "--summary-json", str(summary_path)]
    )
    output = ""
    if capfd is not None:
        out, err = capfd.readouterr()
        output = out + err
    assert code == 0, f"run failed with exit code {code}:\n{output}"
    summary = json.loads(summary_path.read_text())
    dead: list[dict[str, Any]] = []
    for f in sorted((tmp / "dead").rglob("*.ndjson")):
        dead.extend(json.loads(line) for line in f.read_text().splitlines() if line)
    rows = {r["id"]: r for r in summary["connectors"]}
    return Run(summary, rows, text, dead, output)


def expected_records(events: list[dict[str, Any]], config_yaml: str, kind: str) -> dict[str, Any]:
    """event_id -> the exact record the destination must hold.

    Computed with the plain-Python rules the ``dry-run`` command uses
    (:func:`beam_pipeline.dryrun.explain`), compiled once here for speed.
    """
    config = parse_config(config_yaml)
    (connector,) = [c for c in compile_connectors(config) if c.id == f"c_{kind}"]
    out: dict[str, Any] = {}
    for event in events:
        if connector.route.explain(event) is None:
            record = connector.packager.apply(connector.filter.apply(event))
            out[event["event_id"]] = expected_for(kind, orjson.loads(orjson.dumps(record)), event)
    return out


def assert_exactly(expected: dict[str, Any], received: list[tuple[str, Any]], kind: str) -> None:
    counts = Counter(eid for eid, _ in received)
    dupes = {eid: n for eid, n in counts.items() if n > 1}
    assert not dupes, f"{kind}: events received more than once: {list(dupes.items())[:5]}"
    got = dict(received)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, (
        f"{kind}: missing {len(missing)} {missing[:3]}, unexpected {len(extra)} {extra[:3]}"
    )
    wrong = [eid for eid in expected if got[eid] != expected[eid]]
    assert not wrong, (
        f"{kind}: {len(wrong)} records differ, e.g. {wrong[0]}:\n"
        f"  got      {got[wrong[0]]}\n  expected {expected[wrong[0]]}"
    )


# -- the compliance suite ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_delivers_exactly_the_routed_filtered_packaged_events(
    kind: str, tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    target = targets(kind)
    run = run_job(tmp_path, source, config_text(tmp_path, {kind: target}))
    expected = expected_records(events, run.config_yaml, kind)
    assert 50 < len(expected) < N_EVENTS or kind == "elasticsearch"
    assert_exactly(expected, target.received(len(expected)), kind)
    target.check_requests()
    row = run.rows[f"c_{kind}"]
    assert row["routed"] == row["delivered"] == len(expected)
    assert row["dead_lettered"] == 0 and row["retried_immediate"] == 0 and row["balanced"]
    assert run.dead_for(kind) == []
    if kind != "pubsub":
        assert row["bytes"] == sum(len(r.body) for r in target.receiver.snapshot()[0])


@pytest.mark.parametrize("kind", API_KINDS)
def test_5xx_then_success_is_delivered_once_after_immediate_retries(
    kind: str, tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    target = targets(kind)
    target.receiver.fail(times=2, status=500)
    target.receiver.fail(times=1, status=503, headers={"Retry-After": "0"})
    target.receiver.slow(0.2, times=3)  # slow but within the read timeout
    run = run_job(tmp_path, source, config_text(tmp_path, {kind: target}))
    expected = expected_records(events, run.config_yaml, kind)
    assert_exactly(expected, target.received(), kind)
    row = run.rows[f"c_{kind}"]
    assert row["delivered"] == row["routed"] == len(expected)
    assert row["retried_immediate"] == 3  # one retry per failed request
    assert row["dead_lettered"] == 0 and run.dead_for(kind) == []
    requests, _ = target.receiver.snapshot()
    assert [r.status for r in requests].count(500) == 2


@pytest.mark.parametrize("kind", API_KINDS)
def test_429_retry_after_is_honoured(
    kind: str, tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    target = targets(kind)
    target.receiver.throttle(times=1, retry_after="1")
    run = run_job(tmp_path, source, config_text(tmp_path, {kind: target}))
    expected = expected_records(events, run.config_yaml, kind)
    assert_exactly(expected, target.received(), kind)
    requests, _ = target.receiver.snapshot()
    throttled = [r for r in requests if r.status == 429]
    assert len(throttled) == 1
    ids = set(event_ids(kind, throttled[0].items))
    resent = [r for r in requests if r.status == 200 or r.status == 202]
    retry = [r for r in resent if ids & set(event_ids(kind, r.items))]
    assert len(retry) == 1, "the throttled batch is sent again exactly once"
    waited = retry[0].started - throttled[0].finished
    assert waited >= 0.95, f"retried {waited:.3f} s after a 429 with Retry-After: 1"
    assert run.rows[f"c_{kind}"]["retried_immediate"] == 1


@pytest.mark.parametrize("kind", API_KINDS)
def test_400_for_some_requests_ends_as_dead_letters_with_status_and_excerpt(
    kind: str, tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    target = targets(kind)
    text = config_text(tmp_path, {kind: target}, max_events=40)
    expected = expected_records(events, text, kind)
    # Refuse every request that carries one of these events: the first routed one and
    # one in the middle, so some requests fail and the others succeed.
    routed = list(expected)
    poisoned = {routed[0], routed[len(routed) // 2]}
    target.receiver.reject_when(
        lambda items: bool(poisoned & set(event_ids(kind, items))),
        status=400,
        body=b'{"error":"field [fluxdata] of type [long] cannot accept value poison-7"}',
    )
    run = run_job(tmp_path, source, text)
    requests, _ = target.receiver.snapshot()
    refused = [r for r in requests if r.status == 400]
    assert len(refused) == 2 and len(requests) > 2
    refused_ids = {eid for r in refused for eid in event_ids(kind, r.items)}
    dead = run.dead_for(kind)
    assert {d["event_id"] for d in dead} == refused_ids
    assert len(dead) == len(refused_ids)
    for d in dead:
        assert d["stage"] == "deliver" and d["reason"] == "not_retryable"
        assert d["status"] == 400 and d["attempts"] == 1
        assert "HTTP 400" in d["error"] and "cannot accept value poison-7" in d["error"]
        assert d["event"]["event_id"] == d["event_id"]  # the original event, for replay
    delivered = dict(target.received())
    assert set(delivered) == set(expected) - refused_ids
    assert all(delivered[eid] == expected[eid] for eid in delivered)
    row = run.rows[f"c_{kind}"]
    assert row["routed"] == len(expected)
    assert row["routed"] == row["delivered"] + row["dead_lettered"]
    assert row["dead_lettered"] == len(refused_ids) and row["retried_immediate"] == 0


@pytest.mark.parametrize("fault", ["hang", "outage"])
@pytest.mark.parametrize("kind", API_KINDS)
def test_a_hanging_or_down_receiver_does_not_stop_the_others(
    kind: str,
    fault: str,
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    targets: Any,
) -> None:
    source, events = corpus
    all_targets = {k: targets(k) for k in API_KINDS}
    broken = all_targets[kind]
    if fault == "hang":
        broken.receiver.hang(seconds=300)  # far longer than the run may take
    else:
        broken.receiver.outage()
    text = config_text(tmp_path, all_targets, {kind: FAST}, retry="{immediate: 1}")
    run = run_job(tmp_path, source, text)
    if fault == "hang":
        # The run ended while the receiver still held its requests (300 s): the job's
        # timeouts gave up on them; it did not wait for the hang to end.
        held = [r for r in broken.receiver.snapshot()[0] if r.fault == "hang"]
        assert held and all(r.finished is None for r in held), "the timeouts did not bound it"
    for other, target in all_targets.items():
        expected = expected_records(events, run.config_yaml, other)
        row = run.rows[f"c_{other}"]
        assert row["balanced"] and row["routed"] == len(expected)
        if other == kind:
            assert target.received() == []
            dead = run.dead_for(kind)
            assert {d["event_id"] for d in dead} == set(expected)
            assert row["dead_lettered"] == len(expected) and row["delivered"] == 0
            for d in dead:
                assert d["reason"] == "retries_exhausted" and d["attempts"] == 2
                assert d["status"] is None
                want = "no response within 0.5 s" if fault == "hang" else "Connection refused"
                assert want in d["error"]
        else:
            assert_exactly(expected, target.received(), other)
            assert row["delivered"] == len(expected) and row["dead_lettered"] == 0


def test_a_hanging_receiver_does_not_delay_the_others(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    """Every other connector delivers everything while the hung one's requests are held.

    The hung receiver answers nothing until released, and its client waits up to 300 s:
    if any connector's delivery waited for it, that connector could not complete before
    the release, which happens only once every other connector has completed (or gave up
    waiting for them). Decided by state, not by how long anything took.
    """
    source, events = corpus
    all_targets = {k: targets(k) for k in API_KINDS}
    hung = all_targets["elasticsearch"].receiver
    hung.hang(seconds=600)
    text = config_text(
        tmp_path,
        all_targets,
        {"elasticsearch": "timeouts: {connect_s: 2, read_s: 300}, concurrency: 4"},
        retry="{immediate: 0}",
        max_events=50,
    )
    held_when_done: dict[str, tuple[int, int]] = {}

    def watch(kind: str, want: int) -> None:
        receiver = all_targets[kind].receiver
        if receiver.wait_for(lambda r: len(r.items) >= want, timeout=300):
            requests, _ = hung.snapshot()
            held = sum(1 for r in requests if r.finished is None)
            held_when_done[kind] = (len(requests), held)

    watchers = [
        threading.Thread(
            target=watch, args=(k, len(expected_records(events, text, k))), daemon=True
        )
        for k in API_KINDS
        if k != "elasticsearch"
    ]

    def release_when_watched() -> None:
        for w in watchers:
            w.join()
        hung.release()

    for w in watchers:
        w.start()
    releaser = threading.Thread(target=release_when_watched, daemon=True)
    releaser.start()
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--input", str(source), "--chunk-lines", "300"]) == 0
    releaser.join(timeout=60)
    others = [k for k in API_KINDS if k != "elasticsearch"]
    assert sorted(held_when_done) == sorted(others), held_when_done
    # When each finished, the hung receiver had answered none of its requests (it may not
    # have had one yet: backfill batches go out key by key after the shuffle).
    assert all(held == n for n, held in held_when_done.values()), held_when_done
    assert any(n >= 1 for n, _ in held_when_done.values()), held_when_done


@pytest.mark.parametrize("kind", API_KINDS)
def test_secrets_never_appear_in_dead_letters_or_logs(
    kind: str,
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    targets: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    source, _ = corpus
    target = targets(kind)
    # A careless server that quotes the request headers (credentials included) in errors.
    target.receiver.reject_when(lambda items: True, status=401, echo_headers=True)
    caplog.set_level(logging.DEBUG)
    run = run_job(tmp_path, source, config_text(tmp_path, {kind: target}), capfd)
    dead = run.dead_for(kind)
    assert dead and all(d["status"] == 401 for d in dead)
    assert any("***" in d["error"] for d in dead), "the echoed credential was redacted"
    dead_text = "".join(p.read_text() for p in (tmp_path / "dead").rglob("*.ndjson"))
    logs = caplog.text + run.output + json.dumps(run.summary)
    for secret in [*SECRET_ENV.values(), *target.receiver.api.secrets()]:
        for form in (secret, secret.split(" ")[-1]):
            assert form not in dead_text, f"{kind}: secret in dead letters"
            assert form not in logs, f"{kind}: secret in logs or output"


@pytest.mark.parametrize("kind", API_KINDS)
def test_wrong_credentials_are_not_retried_and_not_leaked(
    kind: str,
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    targets: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    source, _ = corpus
    target = targets(kind)
    wrong = "WRONG-credential-a9f3c1e7"
    for name in SECRET_ENV:
        monkeypatch.setenv(name, wrong if name != "TEST_WEBHOOK_AUTH" else f"Bearer {wrong}")
    run = run_job(tmp_path, source, config_text(tmp_path, {kind: target}), capfd)
    requests, items = target.receiver.snapshot()
    assert items == [] and requests
    statuses = {r.status for r in requests}
    assert statuses <= {401, 403}, statuses
    dead = run.dead_for(kind)
    row = run.rows[f"c_{kind}"]
    assert len(dead) == row["routed"] == row["dead_lettered"] > 0
    assert all(d["reason"] == "not_retryable" and d["status"] in (401, 403) for d in dead)
    assert row["retried_immediate"] == 0
    assert wrong not in "".join(p.read_text() for p in (tmp_path / "dead").rglob("*.ndjson"))
    assert wrong not in run.output


# -- API-specific behaviour ------------------------------------------------------------------


def test_elasticsearch_per_item_failures_resend_only_the_failed_documents(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    target = targets("elasticsearch")
    api = target.receiver.api
    throttled = [e["event_id"] for e in events[5::200]]
    refused = [e["event_id"] for e in events[17::300]]
    for eid in throttled:
        api.item_faults[eid] = ItemFault(429, times=1)
    for eid in refused:
        api.item_faults[eid] = ItemFault(
            400, "mapper_parsing_exception", "failed to parse field [fluxdata.x]", times=None
        )
    run = run_job(tmp_path, source, config_text(tmp_path, {"elasticsearch": target}))
    expected = expected_records(events, run.config_yaml, "elasticsearch")
    requests, _ = target.receiver.snapshot()
    sent = Counter(eid for r in requests for eid in event_ids("elasticsearch", r.items))
    # Documents that succeeded the first time were sent once; the 429 ones twice; the 400
    # ones once (not retryable).
    assert {eid: n for eid, n in sent.items() if n != 1} == {eid: 2 for eid in throttled}
    assert set(api.ops) == set(expected) - set(refused)
    assert all(n == 1 for n in api.ops.values())
    dead = run.dead_for("elasticsearch")
    assert sorted(d["event_id"] for d in dead) == sorted(refused)
    for d in dead:
        assert d["status"] == 400 and d["reason"] == "not_retryable"
        assert "mapper_parsing_exception" in d["error"]
    row = run.rows["c_elasticsearch"]
    assert row["delivered"] == len(expected) - len(refused)
    assert row["routed"] == row["delivered"] + row["dead_lettered"]


def test_splunk_invalid_event_number_delivers_the_events_before_and_retries_those_after(
    tmp_path: Path,
    corpus: tuple[Path, list[dict[str, Any]]],
    targets: Any,
) -> None:
    source, events = corpus
    target = targets("splunk_hec")
    text = config_text(tmp_path, {"splunk_hec": target})
    expected = expected_records(events, text, "splunk_hec")
    refused = set(list(expected)[40::150])
    assert len(refused) >= 2
    api = target.receiver.api
    api.bad_event = lambda ev: ev["event"].get("event_id") in refused
    run = run_job(tmp_path, source, text)
    delivered = target.received()
    assert_exactly({k: v for k, v in expected.items() if k not in refused}, delivered, "splunk")
    dead = run.dead_for("splunk_hec")
    assert {d["event_id"] for d in dead} == refused
    assert all(d["status"] == 400 and "Invalid data format" in d["error"] for d in dead)
    row = run.rows["c_splunk_hec"]
    assert row["routed"] == row["delivered"] + row["dead_lettered"] == len(expected)


def test_pubsub_missing_topic_is_a_dead_letter_not_retried(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], pubsub_env: PubSubEmulator
) -> None:
    source, _ = corpus
    text = (
        "connectors:\n  - id: c_pubsub\n    type: pubsub\n    route: {events: [error]}\n"
        f"    deliver: {{topic: {pubsub_env.topic_path('no-such-topic')}}}\n"
        f"dead_letter: {{path: '{tmp_path}/dead'}}\n"
    )
    run = run_job(tmp_path, source, text)
    dead = run.dead_for("pubsub")
    assert dead and all(d["status"] == 404 and d["reason"] == "not_retryable" for d in dead)
    assert all("NotFound" in d["error"] for d in dead)
    assert run.rows["c_pubsub"]["dead_lettered"] == run.rows["c_pubsub"]["routed"] == len(dead)


def test_all_api_connectors_at_once_end_to_end(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    source, events = corpus
    all_targets = {k: targets(k) for k in ALL_KINDS}
    run = run_job(tmp_path, source, config_text(tmp_path, all_targets))
    assert run.summary["balanced"]
    assert run.summary["input"]["events"] == N_EVENTS
    for kind, target in all_targets.items():
        expected = expected_records(events, run.config_yaml, kind)
        assert_exactly(expected, target.received(len(expected)), kind)
        target.check_requests()
        row = run.rows[f"c_{kind}"]
        assert row["routed"] == row["delivered"] == len(expected)
    assert [d for d in run.dead if d["stage"] != "parse"] == []


# -- config validation -------------------------------------------------------------------------


def _config(deliver: str, kind: str) -> str:
    return (
        f"connectors:\n  - id: c1\n    type: {kind}\n    deliver: {deliver}\n"
        "dead_letter: {path: /tmp/dead}\n"
    )


def test_expected_records_agree_with_dry_run(
    tmp_path: Path, corpus: tuple[Path, list[dict[str, Any]]], targets: Any
) -> None:
    _, events = corpus
    text = config_text(tmp_path, {k: targets(k) for k in API_KINDS})
    config = parse_config(text)
    for kind in API_KINDS:
        expected = expected_records(events[:100], text, kind)
        for event in events[:100]:
            (entry,) = [e for e in explain(event, config) if e["connector"] == f"c_{kind}"]
            assert entry["routed"] == (event["event_id"] in expected)
            if entry["routed"]:
                payload = orjson.loads(orjson.dumps(entry["payload"]))
                assert expected[event["event_id"]] == expected_for(kind, payload, event)


@pytest.mark.parametrize(
    ("kind", "deliver", "problem"),
    [
        ("datadog_logs", "{endpoint: 'http://x'}", "deliver.api_key: required"),
        ("datadog_logs", "{endpoint: 'http://x', api_key: k, apikey: k}", "did you mean"),
        ("splunk_hec", "{endpoint: 'ftp://x', token: t}", "not an http(s) URL"),
        ("splunk_hec", "{endpoint: 'https://u:p@x', token: t}", "must not contain credentials"),
        ("new_relic", "{endpoint: 'http://x', api_key: k, account_id: abc}", "account_id"),
        (
            "elasticsearch",
            "{endpoint: 'http://x', index: i, api_key: k, username: u, password: p}",
            "not both",
        ),
        ("elasticsearch", "{endpoint: 'http://x', index: Bad/Index}", "valid Elasticsearch"),
        ("elasticsearch", "{endpoint: 'http://x', index: i, username: u}", "both username"),
        ("http", "{endpoint: 'http://x/h', headers: {Content-Length: '3'}}", "set by the client"),
        ("http", "{endpoint: 'http://x/h', body: xml}", "json_array"),
        ("pubsub", "{topic: projects/p/topics/ab}", "topic"),
        ("pubsub", "{topic: my-topic}", "topic"),
    ],
)
def test_config_errors_name_the_field(kind: str, deliver: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(deliver, kind), "cfg.yaml")
    assert problem in str(err.value)


def test_unset_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_config(
            _config("{endpoint: 'http://x', api_key: '${env:TEST_UNSET_SECRET}'}", "datadog_logs")
        )
    assert "TEST_UNSET_SECRET is not set" in str(err.value)


def test_resolved_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DD_API_KEY", DD_API_KEY)
    config = parse_config(
        _config("{endpoint: 'http://x', api_key: '${env:TEST_DD_API_KEY}'}", "datadog_logs")
    )
    deliver = config.connectors[0].deliver_config
    assert deliver.api_key.get_secret_value() == DD_API_KEY
    assert DD_API_KEY not in repr(deliver) + str(deliver) + deliver.model_dump_json()
