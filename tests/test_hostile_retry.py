"""Hostile inputs on the retry and dead-letter paths (issue 19, items 7, 9, 10 and 12).

- ``replay`` with a streaming config publishes its delayed retries to the Pub/Sub retry
  topic (Google's emulator), and ``retry`` refuses such a config clearly: neither ever
  strands records in a local folder named ``projects/P/topics/T``.
- Dead letters of unreadable input files are named from their content, so two damaged
  files leave two dead letters.
- The dead-letter and retry-record writers are total: whatever a dead letter or record
  holds (nesting deeper than orjson writes, NaN, non-string keys, huge integers, bytes,
  lone surrogates), they write one valid JSON line and never raise.
- A poison retry record (garbage, a JSON list, an object missing fields, a removed
  connector, a sink that raises) becomes a dead letter of its own; the others proceed.
- No dead letter or retry record made on these paths holds a configured secret.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main
from examples.generate_events import generate
from tests.conftest import make_event
from tests.jobs import run_job
from tests.receivers.base import Receiver
from tests.receivers.credentials import make_api, webhook_connector
from tests.standins.pubsub import PubSubEmulator
from transforms.config import parse_config
from transforms.dead_letters import _letters_to_messages
from transforms.retry import HoldRetries, _key_record, write_retry_record
from transforms.rules.letters import (
    dead_letter_name,
    encode_dead_letters,
    encode_retry_record,
    read_retry_message,
)
from transforms.rules.records import DeadLetter, Packaged, RetryRecord

pytest_plugins = ["tests.standins.pubsub", "tests.receivers.fixtures"]

SECRET = "s3cr3t-Token-0123456789"
"""A configured secret (``${env:HOSTILE_SECRET}``) that must never reach a dead letter."""


def read_letters(folder: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for f in sorted(folder.rglob("*.ndjson"))
        for line in f.read_bytes().splitlines()
    ]


def local_projects_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("projects") if p.is_dir()]


# -- item 7: replay and retry with a Pub/Sub retry topic ---------------------------------


def streaming_config(tmp: Path, receiver: Receiver, topic: str, subscription: str) -> Path:
    hook = webhook_connector(
        receiver.url,
        "{max_events: 5}",
        "timeouts: {connect_s: 1, read_s: 1}",
        retry="{immediate: 0, delayed_schedule_s: [300]}",
    )
    cfg = tmp / "streaming.yaml"
    cfg.write_text(
        f"""
connectors:
{hook}
dead_letter: {{path: "{tmp}/dead_letter"}}
retry_location: {topic}
retry_subscription: {subscription}
"""
    )
    return cfg


def test_replay_with_a_pubsub_retry_topic_publishes_there_and_writes_nothing_local(
    tmp_path: Path,
    pubsub_env: PubSubEmulator,
    start_receiver: Any,
    secret_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative "projects/P/topics/T" would land here
    receiver = start_receiver(make_api("http"))
    receiver.fail(times=None, status=503)
    topic = pubsub_env.create_topic("retries")
    subscription = pubsub_env.create_subscription(topic)
    cfg = streaming_config(tmp_path, receiver, topic, subscription)
    want = sorted(f"r{i}" for i in range(12))
    letters = tmp_path / "old_dead_letters" / "deliver"
    letters.mkdir(parents=True)
    (letters / "hook-x.ndjson").write_bytes(
        encode_dead_letters(
            [
                DeadLetter.for_event(
                    "deliver", "hook", make_event(event_id=e), "not_retryable", "x", 400, 1
                )
                for e in want
            ]
        )
    )
    summary = tmp_path / "summary.json"
    code = main(
        [
            "replay",
            "--config",
            str(cfg),
            "--dead-letters",
            str(tmp_path / "old_dead_letters"),
            "--summary-json",
            str(summary),
            "--no-progress",
        ]
    )
    rows = {r["id"]: r for r in json.loads(summary.read_text())["connectors"]}
    assert code == 0 and rows["hook"]["retrying"] == len(want), rows
    assert local_projects_folders(tmp_path) == [], "nothing stranded in a local folder"
    messages = pubsub_env.pull(subscription, expected=len(want) // 5 + 1)
    records = [RetryRecord.from_json_dict(orjson.loads(m.data)) for m in messages]
    assert sorted(i.event_id for r in records for i in r.items) == want
    assert {(r.connector, r.last_status, r.delayed_attempts) for r in records} == {("hook", 503, 0)}


def test_retry_refuses_a_pubsub_retry_topic_naming_the_key_and_the_fix(
    tmp_path: Path,
    start_receiver: Any,
    secret_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    receiver = start_receiver(make_api("http"))
    cfg = streaming_config(
        tmp_path, receiver, "projects/p1/topics/retries", "projects/p1/subscriptions/retries"
    )
    assert main(["retry", "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "retry_location" in err and "directory" in err and "streaming" in err, err
    assert local_projects_folders(tmp_path) == []


# -- item 9: dead letters of unreadable files are named from their content ---------------


def test_two_damaged_gzip_files_leave_two_dead_letters(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(2):
        lines = list(generate(2000, seed=10 + n))
        packed = gzip.compress(b"\n".join(lines) + b"\n")
        (inputs / f"damaged-{n}.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text(
        f"""
connectors:
  - id: archive
    type: file
    deliver: {{path: "{tmp_path}/out/archive", format: ndjson}}
dead_letter: {{path: "{tmp_path}/out/dead_letter"}}
"""
    )
    summary = tmp_path / "summary.json"
    code, written = run_job(cfg, inputs / "*", summary)
    counts = written["input"]
    assert code == 0 and counts["invalid_reasons"] == {"unreadable_input": 2}
    read = [d for d in read_letters(tmp_path / "out" / "dead_letter") if d["stage"] == "read"]
    assert sorted(Path(d["path"]).name for d in read) == [
        "damaged-0.jsonl.gz",
        "damaged-1.jsonl.gz",
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(min_size=1), min_size=2, max_size=5, unique=True),
    st.integers(0, 10**6),
)
def test_dead_letter_names_are_unique_per_content_and_deterministic(
    paths: list[str], lines: int
) -> None:
    def letter(path: str) -> DeadLetter:
        return DeadLetter(
            "read",
            "unreadable_input",
            f"{path}: EOFError",
            original={"path": path, "lines_before": lines},
        )

    names = [dead_letter_name([letter(p)]) for p in paths]
    assert len(set(names)) == len(paths)
    # A rerun (a later failed_at) rewrites the same name.
    again = letter(paths[0])
    again.failed_at = "2030-01-01T00:00:00.000Z"
    assert dead_letter_name([again]) == names[0]


# -- item 10: the writers are total --------------------------------------------------------


def nest(depth: int, as_dict: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
nasty_text = st.one_of(st.text(max_size=8), surrogates)
nasty_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.binary(max_size=8),
    nasty_text,
)
nasty_key = st.one_of(nasty_text, st.integers(), st.none(), st.tuples(st.integers()))
deep = st.builds(nest, st.integers(200, 1100), st.booleans())
nasty_value = st.recursive(
    st.one_of(nasty_scalar, deep),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(nasty_key, inner, max_size=3)
    ),
    max_leaves=6,
)
nasty_dict = st.dictionaries(nasty_key, nasty_value, max_size=4)
nasty_letter = st.builds(
    DeadLetter,
    stage=nasty_text,
    reason=nasty_text,
    error=nasty_text,
    connector=st.one_of(st.none(), nasty_text),
    status=st.one_of(st.none(), st.integers(min_value=-(2**100), max_value=2**100)),
    attempts=st.integers(min_value=-(2**100), max_value=2**100),
    event_id=st.one_of(st.none(), nasty_text),
    event=st.one_of(st.none(), nasty_dict),
    original=nasty_dict,
    failed_at=nasty_text,
)


def assert_json_lines(data: bytes, count: int) -> list[dict[str, Any]]:
    assert data.endswith(b"\n") or count == 0
    lines = data.split(b"\n")[:-1] if data else []
    assert len(lines) == count
    parsed = [orjson.loads(line) for line in lines]  # strict JSON, valid UTF-8
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(nasty_letter, min_size=1, max_size=3))
def test_the_dead_letter_writer_never_raises_and_writes_one_json_line_each(
    letters: list[DeadLetter],
) -> None:
    parsed = assert_json_lines(encode_dead_letters(letters, (SECRET,)), len(letters))
    for letter, record in zip(letters, parsed, strict=True):
        assert "stage" in record and "reason" in record
        if letter.event is not None:
            assert "event" in record or "event_unserializable" in record
    messages = list(_letters_to_messages(letters))  # PublishDeadLetters' encoder
    assert len(messages) == len(letters) and all(
        isinstance(orjson.loads(m), dict) for m in messages
    )
    assert isinstance(dead_letter_name(letters), str)


def test_a_dead_letter_too_deep_for_orjson_keeps_its_event_as_text() -> None:
    event = make_event(event_id="deep") | {"fluxdata": nest(254, True)}
    letter = DeadLetter.for_event("deliver", "hook", event, "not_retryable", "x", 400, 1)
    [record] = assert_json_lines(encode_dead_letters([letter]), 1)
    assert record["event_id"] == "deep" and "event" not in record
    assert record["original_encoding"] == "utf-8" and "Recursion" in record["event_unserializable"]
    assert json.loads(record["original"]) == event  # the whole event, as JSON text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nasty_dict, nasty_dict, nasty_text)
def test_the_retry_record_writer_never_raises(
    event: dict[Any, Any], record: dict[Any, Any], error: str
) -> None:
    item = Packaged("e1", None, "heartbeat", record, event)
    retry = RetryRecord("hook", "p/", [item], "hook/x.json", 1, 0, "t", error, None, 0)
    [parsed] = assert_json_lines(encode_retry_record(retry, (SECRET,)) + b"\n", 1)
    assert parsed["name"] == "hook/x.json"


# -- item 12: poison retry records are isolated --------------------------------------------


def good_record(
    connector: str, event_id: str, not_before_ms: int = 0, prefix: str = ""
) -> RetryRecord:
    event = make_event(event_id=event_id)
    item = Packaged(event_id, 1764136800123, "heartbeat", event, event)
    return RetryRecord(
        connector,
        prefix,
        [item],
        f"{connector}/{event_id}.json",
        4,
        0,
        "t",
        "503",
        503,
        not_before_ms,
    )


@given(st.binary())
def test_keying_a_retry_message_never_raises(data: bytes) -> None:
    key, same = _key_record(data)
    assert isinstance(key, str) and same is data


json_text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3),
    max_leaves=10,
)
RECORD_FIELDS = (
    "connector",
    "prefix",
    "name",
    "attempts",
    "delayed_attempts",
    "first_failed_at",
    "last_error",
    "last_status",
    "not_before_ms",
    "items",
)


@st.composite
def mutated_records(draw: Any) -> bytes:
    """A valid stored record with some fields removed or replaced by any JSON value."""
    tree = orjson.loads(encode_retry_record(good_record("hook", "ok")))
    for name in draw(st.lists(st.sampled_from(RECORD_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            tree.pop(name)
        else:
            tree[name] = draw(json_values)
    return orjson.dumps(tree)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(), json_values.map(orjson.dumps), mutated_records()))
def test_reading_a_retry_message_never_raises(data: bytes) -> None:
    read = read_retry_message(data, {"hook"}, (SECRET,))
    if isinstance(read, list):
        assert read and {d.reason for d in read} <= {"invalid_retry_record", "connector_removed"}
        assert_json_lines(encode_dead_letters(read), len(read))
    else:  # a record that passes can be stored again, unchanged
        assert read_retry_message(encode_retry_record(read), {"hook"}) == read


@pytest.mark.parametrize(
    "change",
    [
        {"connector": "../../escape"},
        {"prefix": "../../escape/"},
        {"prefix": "/etc/"},
        {"name": "../x.json"},
        {"not_before_ms": 1e300},
        {"attempts": -1},
        {
            "items": [
                {"event_id": "e", "time_ms": None, "event_type": "t", "record": 1, "event": {}}
            ]
        },
    ],
)
def test_a_retry_record_that_would_escape_its_location_or_is_malformed_is_refused(
    change: dict[str, Any],
) -> None:
    tree = orjson.loads(encode_retry_record(good_record("hook", "ok"))) | change
    [letter] = read_retry_message(orjson.dumps(tree), {"hook"})  # type: ignore[misc]
    assert letter.reason == "invalid_retry_record" and letter.stage == "retry"
    assert ".." not in dead_letter_name([letter])


def test_hold_retries_turns_poison_messages_into_dead_letters_and_releases_the_rest() -> None:
    # Due 5 s into the TestStream's processing time (a timer at its very start never fires).
    valid = encode_retry_record(good_record("hook", "ok", not_before_ms=5000))
    gone = encode_retry_record(good_record("removed", "gone", not_before_ms=5000))
    poison = [
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"name": "hook/x.json"}',
        b'{"name": "hook/y.json", "connector": "hook", "items": [1], "last_error": "%s"}'
        % SECRET.encode(),
    ]
    config = parse_config(
        """
connectors:
  - id: hook
    type: file
    deliver: {path: /nonexistent/out}
dead_letter: {path: /nonexistent/dl}
"""
    )
    stream = (
        TestStream()
        .add_elements([*poison, valid, gone])
        .advance_processing_time(10)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        held = p | stream | HoldRetries(config, secrets=(SECRET,))
        due = held.due | "DueIds" >> beam.Map(
            lambda b: (b.connector_id, [i.event_id for i in b.items])
        )
        assert_that(due, equal_to([("hook", ["ok"])]), label="Due")
        invalid = held.invalid | "Reasons" >> beam.FlatMap(
            lambda letters: [
                (d.reason, d.connector, d.event_id, SECRET in encode_dead_letters([d]).decode())
                for d in letters
            ]
        )
        assert_that(
            invalid,
            equal_to(
                [("invalid_retry_record", None, None, False)] * len(poison)
                + [("connector_removed", "removed", "gone", False)]
            ),
            label="Invalid",
        )
        kept = held.invalid | "Originals" >> beam.FlatMap(
            lambda letters: [
                d.original.get("original_bytes", 0) > 0 for d in letters if d.event is None
            ]
        )
        assert_that(kept, equal_to([True] * len(poison)), label="RawKept")


def test_the_retry_command_isolates_poison_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_SECRET", SECRET)
    retry = tmp_path / "retry"
    cfg = tmp_path / "delivery.yaml"
    cfg.write_text(
        f"""
connectors:
  - id: archive
    type: file
    deliver: {{path: "{tmp_path}/archive", format: ndjson}}
  - id: hook
    type: http
    deliver:
      endpoint: "http://127.0.0.1:9/hook"
      headers: {{Authorization: '${{env:HOSTILE_SECRET}}'}}
      body: ndjson
dead_letter: {{path: "{tmp_path}/dead_letter"}}
retry_location: "{retry}"
"""
    )
    write_retry_record(str(retry), good_record("archive", "good"))
    write_retry_record(str(retry), good_record("archive", "later", not_before_ms=4_102_444_800_000))
    write_retry_record(str(retry), good_record("removed", "orphan"))
    # A real file sink raising something other than a DeliveryError (a NUL in the path).
    write_retry_record(str(retry), good_record("archive", "nul", prefix="bad\x00dir/"))
    (retry / "archive" / "garbage.json").write_bytes(b"\x00not json " + SECRET.encode())
    summary = tmp_path / "summary.json"
    code = main(["retry", "--config", str(cfg), "--summary-json", str(summary), "--no-progress"])
    data = json.loads(summary.read_text())
    rows = {r["id"]: r for r in data["connectors"]}
    assert code == 0 and data["balanced"], data
    delivered = [
        orjson.loads(x)
        for f in (tmp_path / "archive").rglob("*.ndjson")
        for x in f.read_bytes().splitlines()
    ]
    assert [r["event_id"] for r in delivered] == ["good"]
    letters = read_letters(tmp_path / "dead_letter")
    assert sorted((d["reason"], d["event_id"]) for d in letters) == [
        ("connector_removed", "orphan"),
        ("invalid_retry_record", None),
        ("not_retryable", "nul"),
    ]
    assert rows["archive"]["in"] == 2 and rows["archive"]["delivered"] == 1
    assert rows["archive"]["dead_lettered"] == 1 and rows["archive"]["retry_waiting"] == 1
    assert data["input"]["invalid_reasons"] == {"connector_removed": 1, "invalid_retry_record": 1}
    left = sorted(p.relative_to(retry).as_posix() for p in retry.rglob("*.json"))
    assert left == ["archive/later.json"], "settled records are removed, the waiting one stays"
    for f in (tmp_path / "dead_letter").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
