"""The Python escape hatch of Package (issue 21): ``package: {function: module:callable}``.

The function runs after ``values``, ``rename`` and the template, on a private copy of the
record, and returns a dict (one record), a list of dicts (fan-out) or None (drop, counted
``dropped``). Anything else, or an exception, is a ``package_function_failed`` dead letter
of that event alone, with the exception's type and a redacted, bounded message. The
functions below are the user's code; the configs name them as
``tests.test_package_function:<name>``. Hostile ones first: each test here failed before
the escape hatch existed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from apache_beam.pvalue import TaggedOutput
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_event
from tests.jobs import run_job
from transforms.config import ConfigError, parse_config
from transforms.live import LiveRules
from transforms.package import _PackageChunk
from transforms.rules.package import MAX_FAN_OUT, Packager
from transforms.rules.records import DeadLetter, Packaged, original_event, record_of

HERE = "tests.test_package_function"
SECRET = "hunter2-very-secret-key"

# --- the user's functions ----------------------------------------------------------------


def tag(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "tagged": True}


def fan_out_4(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"n": n, "id": record["event_id"]} for n in range(4)]


def by_type(record: dict[str, Any]) -> Any:
    """heartbeat: dropped; error: raises; anything else: the record, mutated in place."""
    kind = record["event"]["type"]
    if kind == "heartbeat":
        return None
    if kind == "error":
        raise ValueError(f"cannot package {record['event_id']}")
    record["metadata"]["device"]["os"] = "MUTATED"
    record.pop("fluxdata", None)
    return record


def by_count(record: dict[str, Any]) -> Any:
    """``fluxdata.k``: -1 None, -2 text, -3 raises, -4 a list with a non-dict, k >= 0 k records."""
    k = record["fluxdata"]["k"]
    if k == -1:
        return None
    if k == -2:
        return "not a record"
    if k == -3:
        raise KeyError("k")
    if k == -4:
        return [record, 7]
    return [{"i": i} for i in range(k)]


def returns_string(record: dict[str, Any]) -> Any:
    return json.dumps(record)


def returns_huge_list(record: dict[str, Any]) -> Any:
    return [record] * 5_000_000


def mutates(record: dict[str, Any]) -> Any:
    record["metadata"]["device"]["os"] = "MUTATED"
    record["metadata"]["geo"].clear()
    del record["fluxdata"]
    return record


def leaks_secret(record: dict[str, Any]) -> Any:
    raise RuntimeError(
        f"auth failed with {os.environ['EH_TEST_KEY']} at https://api.example/x?token=abc123"
        + "x" * 100_000
    )


def exits(record: dict[str, Any]) -> Any:
    raise SystemExit(3)


def unserializable(record: dict[str, Any]) -> Any:
    return {"at": object()}


def bad_str(record: dict[str, Any]) -> Any:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    raise Weird()


NOT_CALLABLE = 42


def two_args(record: dict[str, Any], other: Any) -> Any:
    return record


# --- helpers -------------------------------------------------------------------------------


def one_connector(function: str, extra: str = "") -> str:
    return f"""
connectors:
  - id: fn
    type: file
    package: {{function: "{function}"{extra}}}
    deliver: {{path: /nowhere/fn}}
dead_letter: {{path: /nowhere/dead}}
"""


def package(
    config: str, events: list[dict[str, Any]], cid: str = "fn", rules: LiveRules | None = None
) -> tuple[list[Packaged], list[DeadLetter]]:
    """One connector's Package stage (the DoFn, no runner) over ``events``."""
    rules = rules or LiveRules(parse_config(config))
    connector = rules.by_id()[cid]
    pairs = [(e, connector.filter.apply(e)) for e in events]
    records: list[Packaged] = []
    letters: list[DeadLetter] = []
    for out in _PackageChunk(rules).process((cid, pairs)):
        if isinstance(out, TaggedOutput):
            letters += out.value
        else:
            records += out[1]
    return records, letters


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "says"),
    [
        ("no_such_module_eh:f", "cannot import module 'no_such_module_eh'"),
        (f"{HERE}:no_such_function", "has no attribute 'no_such_function'"),
        (f"{HERE}:NOT_CALLABLE", "is an int, not a function"),
        (f"{HERE}:two_args", "cannot be called with one record"),
        (f"{HERE}", "module:callable"),
        ("my team:f", "module:callable"),
        ("tests.standins:f:g", "module:callable"),
    ],
)
def test_validate_refuses_a_function_it_cannot_use_with_path_and_fix(
    function: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(one_connector(function))
    text = str(caught.value)
    assert "connectors[0](id=fn).package.function" in text, text
    assert says in text, text
    assert "Fix:" in text, text


def test_validate_reports_an_import_that_raises_as_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "eh_broken_on_import.py").write_text("raise RuntimeError('half installed')\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError) as caught:
            parse_config(one_connector("eh_broken_on_import:f"))
    finally:
        sys.path.remove(str(tmp_path))
    assert "RuntimeError: half installed" in str(caught.value)


def test_the_parsed_config_keeps_the_reference_a_string() -> None:
    config = parse_config(one_connector(f"{HERE}:tag"))
    assert config.connectors[0].package.function == f"{HERE}:tag"
    packager = config.connectors[0].package.compile()
    assert packager.function == f"{HERE}:tag" and not packager.is_identity


# --- semantics -----------------------------------------------------------------------------


def test_function_runs_after_values_rename_and_template() -> None:
    packager = Packager.compile(
        values={"event.type": {"heartbeat": "hb"}},
        rename={"session_id": "sid"},
        template={"fields": {"type": "event.type", "sid": "sid"}},
        function=f"{HERE}:tag",
    )
    assert packager.outputs(make_event()) == [{"type": "hb", "sid": "s1", "tagged": True}]


def test_dict_list_and_none_are_one_many_and_no_records() -> None:
    event = make_event(event_id="e-1")
    assert Packager.compile(template=None, function=f"{HERE}:fan_out_4").outputs(event) == [
        {"n": n, "id": "e-1"} for n in range(4)
    ]
    assert Packager.compile(function=f"{HERE}:by_type").outputs(event) == []
    assert Packager.compile(function=f"{HERE}:tag").outputs(event)[0]["tagged"] is True


@pytest.mark.parametrize(
    ("function", "error"),
    [
        (
            "by_type",
            f"PackageFunctionError: package.function {HERE}:by_type raised ValueError: "
            "cannot package s1-1",
        ),
        ("returns_string", "returned a str; it must return a dict, a list of dicts or None"),
        ("by_count", "KeyError: 'k'"),
        ("exits", "raised SystemExit: 3"),
        ("unserializable", "returned a record that cannot be written as JSON"),
        ("bad_str", "raised Weird: <the exception's text cannot be shown>"),
        ("returns_huge_list", f"returned 5000000 records; at most {MAX_FAN_OUT}"),
    ],
)
def test_a_failing_function_is_a_dead_letter_of_that_event_only(function: str, error: str) -> None:
    events = [make_event(event_id="s1-1", etype="error"), make_event(event_id="s1-2", etype="x")]
    if function == "by_count":
        events = [make_event(event_id="s1-1", fluxdata={"k": -3})]
    records, letters = package(one_connector(f"{HERE}:{function}"), events)
    failed = [d for d in letters if d.event_id == "s1-1"]
    assert len(failed) == 1, letters
    (letter,) = failed
    assert letter.stage == "package" and letter.reason == "package_function_failed"
    assert letter.connector == "fn" and letter.event == events[0]
    assert error in letter.error, letter.error
    assert len(letter.error) <= 600
    # The other event is settled on its own: delivered, or its own dead letter.
    others = [r for r in records if r.event_id.startswith("s1-2")]
    assert len(others) + len([d for d in letters if d.event_id == "s1-2"]) >= (len(events) - 1)


def test_a_list_holding_a_non_record_is_a_dead_letter() -> None:
    records, letters = package(one_connector(f"{HERE}:by_count"), [make_event(fluxdata={"k": -4})])
    assert records == [] and [d.reason for d in letters] == ["package_function_failed"]
    assert "item 1 is an int" in letters[0].error


def test_a_secret_in_the_exception_never_reaches_the_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EH_TEST_KEY", SECRET)
    config = f"""
connectors:
  - id: fn
    type: file
    filter: {{hash: {{paths: [metadata.user.id], key: "${{env:EH_TEST_KEY}}"}}}}
    package: {{function: "{HERE}:leaks_secret"}}
    deliver: {{path: /nowhere/fn}}
dead_letter: {{path: /nowhere/dead}}
"""
    _, letters = package(config, [make_event()])
    (letter,) = letters
    assert SECRET not in letter.error and "abc123" not in letter.error, letter.error
    assert "RuntimeError: auth failed with ***" in letter.error
    assert len(letter.error) <= 600


def test_a_mutating_function_never_changes_another_connectors_record() -> None:
    config = f"""
connectors:
  - {{id: fn, type: file, package: {{function: "{HERE}:mutates"}}, deliver: {{path: /n/fn}}}}
  - id: plain
    type: file
    package: {{values: {{event.type: {{heartbeat: hb}}}}}}
    deliver: {{path: /n/plain}}
dead_letter: {{path: /nowhere/dead}}
"""
    rules = LiveRules(parse_config(config))
    event = make_event()
    pristine = json.loads(json.dumps(event))
    # The same event object reaches both connectors (no filter: nothing is copied).
    mutated, _ = package(config, [event], "fn", rules)
    plain, _ = package(config, [event], "plain", rules)
    assert record_of(mutated[0])["metadata"]["device"]["os"] == "MUTATED"
    assert event == pristine
    assert record_of(plain[0]) == {**pristine, "event": {**pristine["event"], "type": "hb"}}


def test_fan_out_records_get_distinct_stable_ids() -> None:
    records, _ = package(one_connector(f"{HERE}:fan_out_4"), [make_event(event_id="e-9")])
    assert [r.event_id for r in records] == ["e-9#0", "e-9#1", "e-9#2", "e-9#3"]
    # Each record keeps the original event, for its dead letters.
    assert {original_event(r.event)["event_id"] for r in records} == {"e-9"}
    single, _ = package(one_connector(f"{HERE}:tag"), [make_event(event_id="e-9")])
    assert [r.event_id for r in single] == ["e-9"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-4, max_value=6), min_size=1, max_size=25))
def test_every_event_ends_as_records_a_drop_or_one_dead_letter(ks: list[int]) -> None:
    events = [make_event(event_id=f"e{n}", fluxdata={"k": k}) for n, k in enumerate(ks)]
    records, letters = package(one_connector(f"{HERE}:by_count"), events)
    assert len(records) == sum(k for k in ks if k >= 0)
    assert Counter(d.event_id for d in letters) == Counter(
        f"e{n}" for n, k in enumerate(ks) if k in (-2, -3, -4)
    )
    assert all(d.reason == "package_function_failed" for d in letters)
    ids = [r.event_id for r in records]
    assert len(set(ids)) == len(ids)  # fan-out siblings never share a name or an _id


# --- end to end (batch, the README's command) ----------------------------------------------


def read_dir(folder: Path) -> tuple[list[dict[str, Any]], int]:
    files = sorted(folder.rglob("*.ndjson"))
    return [json.loads(x) for f in files for x in f.read_text().splitlines()], len(files)


def test_end_to_end_fan_out_drop_failure_and_isolation(tmp_path: Path) -> None:
    types = ["heartbeat", "error", "playback_start", "heartbeat", "seek", "error"]
    events = [make_event(event_id=f"e{n}", etype=t) for n, t in enumerate(types)]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = tmp_path / "out"
    config = tmp_path / "delivery.yaml"
    config.write_text(
        f"""
connectors:
  - id: mixed
    type: file
    package: {{function: "{HERE}:by_type"}}
    deliver: {{path: "{out}/mixed"}}
  - id: fan
    type: file
    package: {{function: "{HERE}:fan_out_4"}}
    deliver: {{path: "{out}/fan", batch: {{max_events: 2}}}}
  - id: plain
    type: file
    package: {{values: {{event.type: {{seek: seeked}}}}}}
    deliver: {{path: "{out}/plain"}}
dead_letter: {{path: "{out}/dead_letter"}}
"""
    )
    code, summary = run_job(config, source, tmp_path / "summary.json")
    assert code == 0 and summary["balanced"], summary
    rows = {r["id"]: r for r in summary["connectors"]}

    fan, files = read_dir(out / "fan")
    assert sorted((r["id"], r["n"]) for r in fan) == sorted(
        (e["event_id"], n) for e in events for n in range(4)
    )
    assert files == 12  # 24 records, 2 per file: siblings never share an object name
    assert rows["fan"]["routed"] == 6 and rows["fan"]["fanned_out"] == 18
    assert rows["fan"]["in"] == 24 == rows["fan"]["delivered"]

    mixed, _ = read_dir(out / "mixed")
    assert sorted(r["event_id"] for r in mixed) == ["e2", "e4"]
    assert all(r["metadata"]["device"]["os"] == "MUTATED" for r in mixed)
    assert rows["mixed"]["dropped"] == 2 and rows["mixed"]["dead_lettered"] == 2
    assert rows["mixed"]["dead_letter_reasons"] == {"package_function_failed": 2}
    assert rows["mixed"]["in"] == 6

    plain, _ = read_dir(out / "plain")
    want = [
        {
            **e,
            "event": {
                **e["event"],
                "type": "seeked" if e["event"]["type"] == "seek" else e["event"]["type"],
            },
        }
        for e in events
    ]
    assert sorted(plain, key=lambda r: r["event_id"]) == want  # no mutation leaked here

    letters = [
        json.loads(x)
        for f in (out / "dead_letter").rglob("*.ndjson")
        for x in f.read_text().splitlines()
    ]
    assert sorted(d["event_id"] for d in letters) == ["e1", "e5"]
    assert all(d["connector"] == "mixed" and d["event"] in events for d in letters)
    assert all("ValueError: cannot package" in d["error"] for d in letters)


# --- dry-run -------------------------------------------------------------------------------


def test_dry_run_shows_the_functions_output_or_its_dead_letter() -> None:
    from beam_pipeline.dryrun import explain

    config = parse_config(
        f"""
connectors:
  - {{id: fan, type: file, package: {{function: "{HERE}:fan_out_4"}}, deliver: {{path: /n/a}}}}
  - {{id: mixed, type: file, package: {{function: "{HERE}:by_type"}}, deliver: {{path: /n/b}}}}
dead_letter: {{path: /nowhere/dead}}
"""
    )
    fan, mixed = explain(make_event(event_id="e-1", etype="error"), config)
    assert fan["payloads"] == [{"n": n, "id": "e-1"} for n in range(4)]
    assert fan["destination"].startswith("/n/a/fan-")
    assert mixed["dead_letter"]["reason"] == "package_function_failed"
    assert "ValueError: cannot package e-1" in mixed["dead_letter"]["error"]
    _, dropped = explain(make_event(etype="heartbeat"), config)
    assert dropped["dropped"].startswith("package.function returned None")


# --- live reload ---------------------------------------------------------------------------


def test_live_reload_keeps_the_function_in_force_until_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pickle

    import transforms.live as live

    path = tmp_path / "delivery.yaml"
    text = one_connector(f"{HERE}:tag").replace("/nowhere/fn", str(tmp_path / "fn"))
    path.write_text(text)
    rules = LiveRules(parse_config(text), source=str(path), refresh_s=1e-9)
    live._CACHE.clear()
    try:
        assert rules.by_id()["fn"].packager.function == f"{HERE}:tag"
        changed = text.replace(":tag", ":fan_out_4").replace(
            "{function:", "{values: {event.type: {heartbeat: hb}}, function:"
        )
        path.write_text(changed)
        live._CACHE[(str(path), 1e-9)].loaded_at = -1e9
        with caplog.at_level("WARNING"):
            connector = rules.by_id()["fn"]
        assert "package.function" in caplog.text and "restart" in caplog.text
        assert connector.packager.function == f"{HERE}:tag"  # the old one stays in force
        assert connector.packager.values  # the rest of the change applies
        copy = pickle.loads(pickle.dumps(connector))  # as a chunk carries it to a worker
        assert copy.packager.function == f"{HERE}:tag"
        assert copy.packager.outputs(make_event())[0]["event"]["type"] == "hb"
    finally:
        live._CACHE.clear()


def test_summary_settles_fan_out_and_drops_exactly() -> None:
    from beam_pipeline.summary import format_summary, summarize

    config = parse_config(one_connector(f"{HERE}:by_count"))

    def counters(delivered: int) -> dict[tuple[str, str], int]:
        # 10 routed; the function fanned 3 events out to 3 records each (+6) and dropped 2:
        # 16 records to settle = 11 delivered + 2 retrying + 1 dead letter + 2 dropped.
        return {
            ("connector.fn", "routed"): 10,
            ("connector.fn", "fanned_out"): 6,
            ("connector.fn", "dropped"): 2,
            ("connector.fn", "delivered"): delivered,
            ("connector.fn", "retried_delayed"): 2,
            ("connector.fn", "dead_lettered"): 1,
        }

    fine = summarize(counters(11), config)
    (row,) = fine["connectors"]
    assert row["in"] == 16 and row["dropped"] == 2 and fine["balanced"]
    assert "conservation (in = delivered + retrying + dead-lettered + dropped): OK" in (
        format_summary(fine)
    )
    assert summarize(counters(12), config)["balanced"] is False
    assert summarize(counters(10), config)["balanced"] is False


def test_streaming_graph_settles_the_same_records(tmp_path: Path) -> None:
    """The streaming graph (TestStream, GroupIntoBatches on a fake clock): same records."""
    import orjson
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.test_stream import TestStream

    from beam_pipeline.pipeline import Streaming, build_delivery

    types = ["heartbeat", "error", "playback_start", "seek"]
    events = [make_event(event_id=f"e{n}", etype=t) for n, t in enumerate(types)]
    out = tmp_path / "out"
    config = parse_config(
        f"""
connectors:
  - id: mixed
    type: file
    package: {{function: "{HERE}:by_type"}}
    deliver: {{path: "{out}/mixed", batch: {{max_events: 10, max_wait_s: 5}}}}
  - id: fan
    type: file
    package: {{function: "{HERE}:fan_out_4"}}
    deliver: {{path: "{out}/fan", batch: {{max_events: 2, max_wait_s: 5}}}}
dead_letter: {{path: "{out}/dead_letter", batch: {{max_events: 10, max_wait_s: 5}}}}
"""
    )
    stream = (
        TestStream()
        .add_elements([("t", 0, [orjson.dumps(e) for e in events])])
        .advance_processing_time(31)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        build_delivery(p | stream, config, Streaming(clock=lambda: 0.0))
    fan, _ = read_dir(out / "fan")
    assert sorted((r["id"], r["n"]) for r in fan) == [
        (e["event_id"], n) for e in events for n in range(4)
    ]
    mixed, _ = read_dir(out / "mixed")
    assert sorted(r["event_id"] for r in mixed) == ["e2", "e3"]
    letters = [
        json.loads(x)
        for f in (out / "dead_letter").rglob("*.ndjson")
        for x in f.read_text().splitlines()
    ]
    assert [(d["event_id"], d["reason"]) for d in letters] == [("e1", "package_function_failed")]
