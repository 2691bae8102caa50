"""``validate``'s probe: configs that validate and then fail every event (issue 19, item 15).

Each misconfiguration gets one config that passes the schema, and the probe must say,
for that connector, what would happen and how to fix it. Correct configs (the bundled
example and every example in the docs) must report nothing, and an event that routes
nowhere is a note, never a failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main
from beam_pipeline.probe import (
    DEFAULT_TEMPLATES,
    PROBE_EVENT,
    ProbeEventError,
    effective_template,
    load_probe_events,
    probe_config,
)
from tests.conftest import make_event
from transforms.config import DeliveryConfig, compile_connectors, parse_config

ROOT = Path(__file__).resolve().parent.parent
SECRET = "probe-test-secret-value"
ENV_NAMES = (
    "DD_API_KEY",
    "SPLUNK_HEC_TOKEN",
    "NEW_RELIC_LICENSE_KEY",
    "ES_API_KEY",
    "ES_PASSWORD",
    "WEBHOOK_AUTH",
    "AZURE_STORAGE_SAS_TOKEN",
    "K",
)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=https;AccountName=probe;AccountKey=cHJvYmU=;"
        "EndpointSuffix=core.windows.net",
    )


def config(*connectors: str, retry_location: str | None = None) -> DeliveryConfig:
    """A config of the given connector snippets (YAML flow mappings)."""
    text = "connectors:\n" + "".join(f"  - {c}\n" for c in connectors)
    text += "dead_letter: {path: ./out/dead_letter/}\n"
    if retry_location is not None:
        text += f"retry_location: {retry_location}\n"
        if retry_location.startswith("projects/"):
            text += "retry_subscription: projects/p/subscriptions/retries\n"
    return parse_config(text, "probe-test.yaml")


def only_problem(cfg: DeliveryConfig, connector_id: str, event: Any = None) -> str:
    """The single problem the probe reports, checked to name the connector and a fix."""
    report = probe_config(cfg, event)
    assert len(report.problems) == 1, report.problems
    (problem,) = report.problems
    assert f"(id={connector_id})" in problem, problem
    assert "Fix:" in problem, problem
    assert SECRET not in problem
    return problem


NEW_RELIC = (
    "{id: nr, type: new_relic, %s"
    "deliver: {endpoint: 'https://insights-collector.newrelic.com', account_id: 1234567, "
    "api_key: '${env:NEW_RELIC_LICENSE_KEY}'}}"
)
DATADOG = "{id: dd, type: datadog_logs, deliver: {endpoint: '%s', api_key: '${env:DD_API_KEY}'}}"
SPLUNK = "{id: sp, type: splunk_hec, %sdeliver: {endpoint: '%s', token: '${env:SPLUNK_HEC_TOKEN}'}}"
ELASTIC = (
    "{id: es, type: elasticsearch, package: {template: elasticsearch}, "
    "deliver: {endpoint: 'https://es.example.com:9200', index: %s, api_key: '${env:ES_API_KEY}'%s}}"
)
PUBSUB = "{id: ps, type: pubsub, deliver: {topic: projects/p/topics/video-events%s}}"


# -- New Relic: eventType ----------------------------------------------------------------------


def test_new_relic_without_a_template_is_reported_until_it_defaults_to_its_own() -> None:
    cfg = config(NEW_RELIC % "")
    (compiled,) = compile_connectors(cfg)
    report = probe_config(cfg)
    if compiled.packager.template is None:  # the job sends the bare event: no eventType
        problem = only_problem(cfg, "nr")
        assert "eventType" in problem and "dead-letter" in problem
        assert "template: new_relic" in problem
    else:  # the job applies the type's default template (templates/new_relic.yaml)
        assert compiled.packager.template.name == "new_relic"
        assert report.problems == []


@pytest.mark.parametrize(
    "package",
    [
        "package: {template: flat_event}, ",  # a real template, but not New Relic's shape
        "package: {template: null}, ",  # explicitly no template
        "package: {template: {fields: {eventType: {const: 'bad/type'}, id: event_id}}}, ",
    ],
)
def test_new_relic_records_without_a_valid_event_type_are_reported(package: str) -> None:
    problem = only_problem(config(NEW_RELIC % package), "nr")
    assert "eventType" in problem and "dead-letter" in problem


def test_new_relic_with_too_many_attributes_is_reported() -> None:
    event = make_event(metadata={"custom": {f"k{n}": n for n in range(300)}})
    problem = only_problem(config(NEW_RELIC % "package: {template: new_relic}, "), "nr", event)
    assert "attributes" in problem and "255" in problem


# -- endpoints that the connector extends with its own path -------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "base"),
    [
        (
            "https://http-intake.logs.datadoghq.com/api/v2/logs",
            "https://http-intake.logs.datadoghq.com",
        ),
        (
            "https://http-intake.logs.datadoghq.eu/api/v2/logs/",
            "https://http-intake.logs.datadoghq.eu",
        ),
        ("http://127.0.0.1:8126/proxy/api/v2/logs", "http://127.0.0.1:8126/proxy"),
    ],
)
def test_a_datadog_endpoint_that_already_ends_in_the_intake_path_is_reported(
    endpoint: str, base: str
) -> None:
    problem = only_problem(config(DATADOG % endpoint), "dd")
    assert "/api/v2/logs/api/v2/logs" in problem
    assert f"Fix: endpoint: {base} " in problem


@pytest.mark.parametrize(
    "path",
    ["/services/collector/event", "/services/collector", "/services/collector/event/1.0"],
)
def test_a_splunk_endpoint_that_already_holds_the_collector_path_is_reported(path: str) -> None:
    problem = only_problem(config(SPLUNK % ("", "https://splunk.example.com:8088" + path)), "sp")
    assert "/services/collector/event" in problem
    assert "Fix: endpoint: https://splunk.example.com:8088 " in problem


def test_endpoints_that_only_look_alike_are_fine() -> None:
    cfg = config(
        DATADOG % "https://proxy.example.com/api/v2/logsink",
        SPLUNK % ("", "https://splunk.example.com:8088/my-services/collector"),
    )
    assert probe_config(cfg).problems == []


# -- Elasticsearch data streams -----------------------------------------------------------------


@pytest.mark.parametrize("op_type", ["", ", op_type: index"])
def test_a_data_stream_with_op_type_index_is_reported(op_type: str) -> None:
    problem = only_problem(config(ELASTIC % ("logs-video-default", op_type)), "es")
    assert "data stream" in problem and "op_type: create" in problem


def test_a_data_stream_with_op_type_create_and_a_timestamp_is_fine() -> None:
    cfg = config(ELASTIC % ("logs-video-default", ", op_type: create"))
    assert probe_config(cfg).problems == []


def test_a_data_stream_document_without_timestamp_is_reported() -> None:
    cfg = config(
        "{id: es, type: elasticsearch, package: {template: flat_event}, deliver: {endpoint: "
        "'https://es.example.com:9200', index: logs-video-default, op_type: create}}"
    )
    problem = only_problem(cfg, "es")
    assert "@timestamp" in problem


def test_a_document_with_an_elasticsearch_metadata_field_is_reported() -> None:
    cfg = config(
        "{id: es, type: elasticsearch, package: {template: {fields: {_id: event_id, "
        "t: event.type}}}, deliver: {endpoint: 'https://es.example.com:9200', index: video}}"
    )
    problem = only_problem(cfg, "es")
    assert "_id" in problem and "metadata field" in problem


# -- event time under a time prefix --------------------------------------------------------------

TIME_PREFIXED = (
    "{id: files, type: file, deliver: {path: ./out/files, prefix: '{year}/{month}/{day}/'}}",
    "{id: bucket, type: s3, deliver: {bucket: telemetry, prefix: 'raw/{year}/{hour}/'}}",
)


@pytest.mark.parametrize("connector", TIME_PREFIXED)
def test_epoch_seconds_under_a_time_prefix_are_reported_as_1970(connector: str) -> None:
    cfg = config(connector)
    cid = cfg.connectors[0].id
    problem = only_problem(cfg, cid, make_event(ts=1764136800))
    assert "1970" in problem and "epoch seconds" in problem
    assert "1764136800000" in problem  # the fix shows the value in milliseconds


@pytest.mark.parametrize("connector", TIME_PREFIXED)
@pytest.mark.parametrize("ts", ["1764136800123", None, "yesterday"])
def test_unreadable_time_under_a_time_prefix_is_reported_as_dead_letters(
    connector: str, ts: Any
) -> None:
    cfg = config(connector)
    problem = only_problem(cfg, cfg.connectors[0].id, make_event(ts=ts))
    assert "prefix_unrenderable" in problem


def test_a_prefix_without_time_does_not_care_about_the_time() -> None:
    cfg = config("{id: files, type: file, deliver: {path: ./out/f, prefix: '{event_type}/'}}")
    assert probe_config(cfg, make_event(ts=1764136800)).problems == []


def test_epoch_seconds_sent_to_splunk_are_reported_as_1970() -> None:
    cfg = config(SPLUNK % ("package: {template: splunk_hec}, ", "https://splunk.example.com:8088"))
    problem = only_problem(cfg, "sp", make_event(ts=1764136800))
    assert "1970" in problem and "time" in problem


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(second=st.integers(978_307_200, 4_102_444_799))  # 2001-01-01 .. 2099-12-31
@example(second=1_047_040_140)  # '1047040140000' reads as ISO-8601 1047-04-01 on 3.11
@example(second=2_013_123_090)  # '2013123090000' reads as ISO-8601 2013-12-30 on 3.11
def test_any_plausible_time_is_caught_in_seconds_or_microseconds_and_passes_in_ms(
    second: int,
) -> None:
    cfg = config(TIME_PREFIXED[0])
    (in_seconds,) = probe_config(cfg, make_event(ts=second)).problems
    assert "epoch seconds" in in_seconds and f"({second * 1000})" in in_seconds
    (in_micros,) = probe_config(cfg, make_event(ts=second * 1_000_000 + 7)).problems
    assert "epoch microseconds" in in_micros and f"({second * 1000})" in in_micros
    assert probe_config(cfg, make_event(ts=second * 1000 + 123)).problems == []
    # A digit string is not epoch ms to the job, nor a basic ISO-8601 date (which Python
    # 3.11 would read: '2013123090000' as 2013-12-30): unreadable, a dead letter.
    for text in (str(second * 1000), str(second)):
        (as_text,) = probe_config(cfg, make_event(ts=text)).problems
        assert "string of digits" in as_text and f"({second * 1000})" in as_text
        assert "prefix_unrenderable" in as_text or "silently filed" in as_text


# -- retry records on a Pub/Sub retry topic; Pub/Sub attributes ----------------------------------


def test_retry_records_over_the_pubsub_limit_are_reported() -> None:
    connector = "{id: bulk, type: s3, deliver: {bucket: telemetry, batch: {max_events: 20000}}}"
    problem = only_problem(config(connector, retry_location="projects/p/topics/retries"), "bulk")
    assert "10 MB" in problem and "retry" in problem
    limit = int(re.search(r"batch\.max_events: (\d+)", problem).group(1))  # type: ignore[union-attr]
    assert 1000 <= limit < 20000
    # The suggested size fits, one event more per batch would still fit, twice as many not.
    fits = config(
        connector.replace("20000", str(limit)), retry_location="projects/p/topics/retries"
    )
    assert probe_config(fits).problems == []
    too_many = connector.replace("20000", str(limit * 2))
    assert probe_config(config(too_many, retry_location="projects/p/topics/retries")).problems


def test_large_batches_are_fine_with_a_retry_directory() -> None:
    connector = "{id: bulk, type: s3, deliver: {bucket: telemetry, batch: {max_events: 20000}}}"
    assert probe_config(config(connector, retry_location="./out/retry/")).problems == []


@pytest.mark.parametrize("field", ["event_id", "event_type"])
def test_pubsub_attributes_over_1024_bytes_are_reported(field: str) -> None:
    long = "é" * 513  # 1,026 bytes in UTF-8, 513 characters
    event = make_event(event_id=long) if field == "event_id" else make_event(etype=long)
    problem = only_problem(config(PUBSUB % ""), "ps", event)
    assert field in problem and "1024" in problem.replace(",", "")


def test_an_empty_splunk_event_is_reported() -> None:
    package = "package: {template: {fields: {x: {path: no.such.field}}}}, "
    problem = only_problem(config(SPLUNK % (package, "https://splunk.example.com:8088")), "sp")
    assert "blank" in problem


def test_a_record_larger_than_a_request_is_reported() -> None:
    event = make_event(metadata={"blob": "x" * 3000})
    cfg = config(
        "{id: hook, type: http, deliver: {endpoint: 'https://h.example.com/in', "
        "max_request_bytes: 2000}}"
    )
    problem = only_problem(cfg, "hook", event)
    assert "max_request_bytes" in problem


# -- correct configs report nothing; routing nowhere is a note ----------------------------------


def yaml_blocks(doc: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def doc_configs() -> list[tuple[str, str]]:
    """Every complete config in the docs, and one config of all their connector examples."""
    out = [("examples/delivery.yaml", (ROOT / "examples" / "delivery.yaml").read_text())]
    snippets = []
    for doc in ("api-connectors.md", "object-stores.md"):
        for n, block in enumerate(yaml_blocks(doc)):
            if block.startswith("connectors:"):
                out.append((f"{doc}#{n}", block))
            elif block.startswith("  - id:"):
                snippets.append(block)
    assert len(snippets) >= 6, "the API connector examples were not found"
    combined = "connectors:\n" + "".join(snippets) + "dead_letter: {path: ./out/dl/}\n"
    out.append(("api-connectors.md (all)", combined))
    return out


@pytest.mark.parametrize(("name", "text"), doc_configs(), ids=[n for n, _ in doc_configs()])
def test_the_documented_configs_report_nothing(name: str, text: str) -> None:
    cfg = parse_config(text, name)
    report = probe_config(cfg)
    assert report.problems == [], report.problems
    assert report.notes == [], "the bundled probe reaches every documented connector"


def test_the_sample_events_route_and_pass_on_the_example_config() -> None:
    cfg = parse_config((ROOT / "examples" / "delivery.yaml").read_text(), "delivery.yaml")
    assert probe_config(cfg, make_event()).problems == []


def test_an_event_that_routes_nowhere_is_a_note_not_a_problem() -> None:
    cfg = config(
        "{id: ops, type: file, route: {events: [heartbeat]}, deliver: {path: ./o, "
        "prefix: '{year}/'}}"
    )
    report = probe_config(cfg, make_event(etype="ad_click", ts=1764136800))
    assert report.problems == []
    (note,) = report.notes
    assert "routes to no connector" in note and "ops" in note


def test_a_catch_all_is_probed_only_with_the_events_no_other_connector_takes() -> None:
    # The catch-all would reject every record (no eventType): it is reported only for
    # the event that reaches it, as the job routes (route.unmatched).
    cfg = config(
        "{id: ops, type: file, route: {events: [heartbeat]}, deliver: {path: ./o}}",
        NEW_RELIC % "route: {unmatched: true}, package: {template: null}, ",
    )
    assert probe_config(cfg, make_event(etype="heartbeat")).problems == []
    report = probe_config(cfg, [make_event(etype="heartbeat"), make_event(etype="error")])
    (problem,) = report.problems
    assert problem.startswith("connectors[1](id=nr)") and "eventType" in problem
    nowhere = config(
        "{id: ops, type: file, route: {events: [heartbeat]}, deliver: {path: ./o}}",
        "{id: rest, type: file, route: {unmatched: true, exclude_events: [seek]}, "
        "deliver: {path: ./p}}",
    )
    (note,) = probe_config(nowhere, make_event(etype="seek")).notes
    assert "routes to no connector" in note and "rest: " in note


def test_a_connector_the_bundled_probe_cannot_reach_is_a_note() -> None:
    cfg = config(
        "{id: never, type: file, route: {sample_sessions: 0.0}, deliver: {path: ./o}}",
        "{id: regex, type: file, route: {when: [{field: metadata.x, op: regex, value: '^z+$'}]}, "
        "deliver: {path: ./p}}",
    )
    report = probe_config(cfg)
    assert report.problems == []
    assert [n.split(":")[0] for n in report.notes] == [
        "connectors[0](id=never)",
        "connectors[1](id=regex)",
    ]


def test_the_bundled_probe_is_adapted_to_each_route() -> None:
    # A New Relic connector that receives only errors from Canada, sampled: the bundled
    # probe (a heartbeat from the US) is made into an event it receives, so its missing
    # eventType is still found.
    cfg = config(
        NEW_RELIC
        % (
            "route: {events: [error], sample_sessions: 0.1, when: [{field: "
            "metadata.geo.country_code, op: eq, value: CA}, {field: fluxdata.num_errors, op: "
            "gte, value: 1}]}, package: {template: flat_event}, "
        )
    )
    assert "eventType" in only_problem(cfg, "nr")
    assert PROBE_EVENT["event"]["type"] != "error"  # the bundled event itself is unchanged


# -- --event FILE --------------------------------------------------------------------------------


def test_load_probe_events_reads_one_json_object_or_json_lines(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(make_event("a"), indent=2))
    assert [e["event_id"] for e in load_probe_events(str(one))] == ["a"]
    lines = tmp_path / "many.jsonl"
    lines.write_text("\n".join(json.dumps(make_event(f"e{n}")) for n in range(3)) + "\n\n")
    assert [e["event_id"] for e in load_probe_events(str(lines))] == ["e0", "e1", "e2"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"event": {"type": "x"}}', "no_event_id"),
        ('{"event_id": "a", "event": {"type": "x"}}\nnot json\n', "line 2"),
        ("", "no event"),
    ],
)
def test_load_probe_events_refuses_what_is_not_an_event(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProbeEventError, match=reason):
        load_probe_events(str(path))
    with pytest.raises(ProbeEventError, match="cannot read"):
        load_probe_events(str(tmp_path / "missing.json"))


def test_several_probe_events_are_all_checked() -> None:
    cfg = config(TIME_PREFIXED[0])
    report = probe_config(cfg, [make_event("ok"), make_event("late", ts=1764136800)])
    (problem,) = report.problems
    assert "'late'" in problem


# -- (1) each type defaults to its own packaging template ----------------------------------------


@pytest.mark.parametrize(
    ("ctype", "deliver"),
    [
        ("new_relic", "{endpoint: 'https://n.example.com', account_id: 1, api_key: '${env:K}'}"),
        ("datadog_logs", "{endpoint: 'https://d.example.com', api_key: '${env:K}'}"),
        ("splunk_hec", "{endpoint: 'https://s.example.com', token: '${env:K}'}"),
        ("elasticsearch", "{endpoint: 'https://e.example.com', index: video}"),
    ],
)
def test_effective_template_is_the_types_own_unless_given(ctype: str, deliver: str) -> None:
    bare = config(f"{{id: c, type: {ctype}, deliver: {deliver}}}").connectors[0]
    assert effective_template(bare) == ctype
    given_one = config(
        f"{{id: c, type: {ctype}, package: {{template: flat_event}}, deliver: {deliver}}}"
    ).connectors[0]
    assert effective_template(given_one) == "flat_event"
    opted_out = config(
        f"{{id: c, type: {ctype}, package: {{template: null}}, deliver: {deliver}}}"
    ).connectors[0]
    assert effective_template(opted_out) is None


def test_types_without_a_template_of_their_own_have_no_default() -> None:
    cfg = config(
        "{id: f, type: file, deliver: {path: ./o}}",
        "{id: h, type: http, deliver: {endpoint: 'https://h.example.com/in'}}",
        PUBSUB % "",
    )
    assert [effective_template(c) for c in cfg.connectors] == [None, None, None]


@pytest.mark.parametrize("ctype", ["new_relic", "datadog_logs", "splunk_hec", "elasticsearch"])
def test_the_job_packages_with_the_types_own_template_by_default(ctype: str) -> None:
    deliver = {
        "new_relic": "{endpoint: 'https://n.example.com', account_id: 1, api_key: '${env:K}'}",
        "datadog_logs": "{endpoint: 'https://d.example.com', api_key: '${env:K}'}",
        "splunk_hec": "{endpoint: 'https://s.example.com', token: '${env:K}'}",
        "elasticsearch": "{endpoint: 'https://e.example.com', index: video}",
    }[ctype]
    cfg = config(
        f"{{id: bare, type: {ctype}, deliver: {deliver}}}",
        f"{{id: optout, type: {ctype}, package: {{template: null}}, deliver: {deliver}}}",
    )
    bare, optout = compile_connectors(cfg)
    assert bare.packager.template is not None and bare.packager.template.name == ctype
    assert optout.packager.template is None  # an explicit null opts out
    assert probe_config(cfg.model_copy(update={"connectors": cfg.connectors[:1]})).problems == []


def test_every_default_template_is_shipped() -> None:
    from transforms.rules.package import load_named_template

    for ctype, name in DEFAULT_TEMPLATES.items():
        assert load_named_template(name).name == name, ctype


# -- the validate command ------------------------------------------------------------------------


def test_validate_fails_with_the_probes_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "delivery.yaml"
    path.write_text(
        "connectors:\n  - "
        + DATADOG % "https://http-intake.logs.datadoghq.com/api/v2/logs"
        + "\n  - "
        + TIME_PREFIXED[0]
        + "\ndead_letter: {path: ./out/dl/}\n"
    )
    assert main(["validate", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "connectors[0](id=dd)" in err and "Fix: endpoint:" in err and SECRET not in err

    seconds = tmp_path / "seconds.json"
    seconds.write_text(json.dumps(make_event(ts=1764136800)))
    assert main(["validate", "--config", str(path), "--event", str(seconds)]) == 1
    err = capsys.readouterr().err
    assert "connectors[1](id=files)" in err and "epoch seconds" in err


def test_validate_passes_with_notes_and_refuses_a_bad_event_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = str(ROOT / "examples" / "delivery.yaml")
    assert main(["validate", "--config", config_path]) == 0
    assert "OK, 3 connector(s)" in capsys.readouterr().out
    ad_click = tmp_path / "ad_click.json"
    ad_click.write_text(json.dumps(make_event(etype="ad_click")))
    assert main(["validate", "--config", config_path, "--event", str(ad_click)]) == 0
    out = capsys.readouterr().out  # only the archive takes every type
    assert "note: connectors[0](id=ops_qoe): no probe event routes here" in out
    assert "routes to no connector" not in out and "OK, 3 connector(s)" in out
    heartbeats = tmp_path / "heartbeats.yaml"
    heartbeats.write_text(
        "connectors:\n  - {id: ops, type: file, route: {events: [heartbeat]}, "
        "deliver: {path: ./o}}\ndead_letter: {path: ./dl/}\n"
    )
    assert main(["validate", "--config", str(heartbeats), "--event", str(ad_click)]) == 0
    out = capsys.readouterr().out
    assert "note: event 's1-1' routes to no connector" in out and "OK" in out
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["validate", "--config", config_path, "--event", str(bad)]) == 2
    assert "not_an_object" in capsys.readouterr().err


def test_validate_checks_a_bigquery_template_and_records_against_the_declared_schema() -> None:
    table = (
        "{id: bq, type: bigquery, package: {template: {fields: %s}}, "
        "deliver: {table: my-project.telemetry.events, schema: %s}}"
    )
    fields = "{event_id: event_id, country: {path: metadata.geo.country_code}}"
    agreeing = "[{name: event_id, type: STRING, mode: REQUIRED}, {name: country, type: STRING}]"
    assert probe_config(config(table % (fields, agreeing))).problems == []
    narrow = "[{name: event_id, type: STRING, mode: REQUIRED}]"  # no column for country
    problems = probe_config(config(table % (fields, narrow))).problems
    assert problems and all(p.startswith("connectors[0](id=bq)") for p in problems)
    assert any("country" in p for p in problems), problems
