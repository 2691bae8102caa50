"""A connector that changes nothing sends each event as its input line (``encode.line_json``).

Only where the record would be the parsed event itself: no filter, no package step, a sink
that sends records as JSON. The line is the same JSON value; it is not serialized again.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beam_pipeline.cli import main
from tests.conftest import make_event
from tests.test_raw_original import run_stages
from transforms.config import compile_connectors, parse_config
from transforms.rules.encode import dumps, line_json

TEXT = st.text(alphabet=st.sampled_from('ab é—’\u2028\u2029"\\\n\t'), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(TEXT, JSON_VALUES, max_size=5))
def test_a_compact_line_gives_exactly_the_bytes_dumps_gives(obj: dict[str, Any]) -> None:
    # Lines written by orjson (as the bench corpus and most producers' are): nothing changes.
    assert line_json(orjson.dumps(obj)) == dumps(obj)


def test_a_line_keeps_its_spelling_loses_its_ends_and_escapes_line_separators() -> None:
    line = b' {"event_id": "e1", "n": 1.50, "t": "a\xe2\x80\xa8b\xe2\x80\xa9"}\r'
    got = line_json(line)
    assert got == b'{"event_id": "e1", "n": 1.50, "t": "a\\u2028b\\u2029"}'
    assert orjson.loads(got) == orjson.loads(line)


CONNECTORS = """
connectors:
  - {id: archive, type: file, deliver: {path: out/a}}
  - {id: renamed, type: file, package: {rename: {session_id: sid}}, deliver: {path: out/b}}
  - {id: valued, type: file, package: {values: {event.type: {error: e}}}, deliver: {path: out/c}}
  - {id: templated, type: file, package: {template: flat_event}, deliver: {path: out/d}}
  - {id: filtered, type: file, filter: {metadata: {deny: [user]}}, deliver: {path: out/e}}
  - {id: hashed, type: file, filter: {hash: {paths: [metadata.user.id], key: "${env:K}"}},
     deliver: {path: out/f}}
  - {id: splunk, type: splunk_hec, deliver: {endpoint: "http://127.0.0.1:1", token: "${env:K}"}}
  - {id: sent, type: http, deliver: {endpoint: "http://127.0.0.1:1"}}
dead_letter: {path: out/dl}
"""


def test_only_connectors_that_change_nothing_and_send_json_send_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("K", "secret-key-for-the-test")
    sends = {c.id: c.sends_lines for c in compile_connectors(parse_config(CONNECTORS, "t"))}
    assert sends == {
        "archive": True,
        "renamed": False,
        "valued": False,
        "templated": False,
        "filtered": False,
        "hashed": False,
        "splunk": False,  # builds its own envelope per record
        "sent": True,
    }


def test_a_line_with_a_carriage_return_inside_is_serialized_again(tmp_path: Path) -> None:
    line = b'{"event_id": "e0",\r"event": {"type": "heartbeat"}}'
    assert orjson.loads(line) and line_json(line) is None  # valid JSON, CR as whitespace
    (item,) = run_stages(tmp_path, ("f", 0, [line]))["all"]
    assert item.data == dumps(orjson.loads(line))


def test_package_sends_the_lines_of_unchanged_events_only(tmp_path: Path) -> None:
    events = [make_event(f"e{n}", ["heartbeat", "error"][n % 2]) for n in range(4)]
    # As a producer might write them: spaces after separators, a CRLF line end.
    lines = [json.dumps(e).encode() + (b"\r" if n == 1 else b"") for n, e in enumerate(events)]
    got = run_stages(tmp_path, ("f", 0, lines))
    assert [i.data for i in got["all"]] == [line_json(line) for line in lines]
    assert got["all"][1].data == json.dumps(events[1]).encode()  # CR removed, spaces kept
    items = got["all"]
    assert all(i.record is None and i.event is line for i, line in zip(items, lines, strict=True))
    errors = got["errors"]  # filtered and renamed: serialized from the new record
    assert [orjson.loads(i.data or b"")["sid"] for i in errors] == ["s1", "s1"]
    assert all(i.data == dumps(orjson.loads(i.data or b"")) for i in errors)


def test_an_event_that_got_pubsub_attributes_is_serialized_again(tmp_path: Path) -> None:
    events = [make_event("e0", "heartbeat"), make_event("e1", "heartbeat")]
    lines = [json.dumps(e).encode() for e in events]
    got = run_stages(tmp_path, ("pubsub", 0, lines, [{"tenant": "t1"}, None]))
    first, second = got["all"]
    assert first.data == dumps({**events[0], "attributes": {"tenant": "t1"}})
    assert second.data == line_json(lines[1])


def test_the_archive_files_hold_the_input_lines(tmp_path: Path) -> None:
    events = [make_event(f"e{n}", "heartbeat") for n in range(30)]
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in events]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\r\n".join(lines) + b"\r\n")
    config = tmp_path / "delivery.yaml"
    config.write_text(
        json.dumps(
            {
                "connectors": [
                    {
                        "id": "archive",
                        "type": "file",
                        "deliver": {"path": str(tmp_path / "out"), "format": "ndjson.gz"},
                    }
                ],
                "dead_letter": {"path": str(tmp_path / "dl")},
            }
        )
    )
    assert main(["run", "--config", str(config), "--input", str(source), "--no-progress"]) == 0
    written = [
        line
        for f in sorted((tmp_path / "out").rglob("*.ndjson.gz"))
        for line in gzip.decompress(f.read_bytes()).splitlines()
    ]
    # The lines as written, without their CR, with U+2028 (in every title here) escaped.
    assert sorted(written) == sorted(line.replace(b"\xe2\x80\xa8", b"\\u2028") for line in lines)
