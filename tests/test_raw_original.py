"""Packaged records keep each event's raw line as the original, not the parsed event.

The parsed event is then freed with its slice, right after Package; a batch waiting for
its write holds one bytes object per event. Dead letters and retry records still carry
the parsed event, exactly as before (``transforms.rules.records.Packaged.event``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import make_event
from transforms.coders import ChunkCoder
from transforms.config import parse_config
from transforms.filter import _FilterChunk
from transforms.live import as_rules
from transforms.package import _PackageChunk
from transforms.parse import _ParseChunk
from transforms.route import _RouteChunk
from transforms.rules.records import (
    Chunk,
    DeadLetter,
    Packaged,
    RetryRecord,
    original_event,
    raw_of,
)

CONFIG = """
connectors:
  - id: all
    type: file
    deliver: {{path: "{out}/all", format: ndjson}}
  - id: errors
    type: file
    route: {{events: [error]}}
    filter: {{metadata: {{allow: [geo]}}}}
    package: {{rename: {{session_id: sid}}}}
    deliver: {{path: "{out}/errors", format: ndjson}}
dead_letter: {{path: "{out}/dl"}}
"""


def run_stages(tmp_path: Path, chunk: tuple[Any, ...]) -> dict[str, list[Packaged]]:
    """Parse -> Route -> Filter -> Package by hand, slice by slice, as the fused stage does."""
    rules = as_rules(parse_config(CONFIG.format(out=tmp_path)))
    fns: list[Any] = [_ParseChunk(2), _RouteChunk(rules), _FilterChunk(rules)]
    fns.append(_PackageChunk(rules))
    for fn in fns:
        if hasattr(fn, "setup"):
            fn.setup()
    out: dict[str, list[Packaged]] = {}
    for events in fns[0].process(chunk):
        if not isinstance(events, Chunk):
            continue  # invalid lines
        for routed in fns[1].process(events):
            for filtered in fns[2].process(routed):
                for packaged in fns[3].process(filtered):
                    cid, items = packaged
                    out.setdefault(cid, []).extend(items)
    return out


def test_packaged_records_hold_the_raw_line_of_each_event(tmp_path: Path) -> None:
    events = [make_event(f"e{n}", ["heartbeat", "error"][n % 2]) for n in range(5)]
    lines = [orjson.dumps(e) for e in events]
    got = run_stages(tmp_path, ("f", 0, [lines[0], b"{bad", *lines[1:]]))
    assert [i.event_id for i in got["all"]] == [e["event_id"] for e in events]
    assert [i.event_id for i in got["errors"]] == ["e1", "e3"]
    for items in got.values():
        for item in items:
            n = int(item.event_id[1:])
            assert item.event is lines[n], "the line itself, not a copy or the parsed event"
            assert original_event(item.event) == events[n]
    # The record is still the filtered, renamed one, not the line.
    assert orjson.loads(got["errors"][0].data or b"")["sid"] == events[1]["session_id"]


def test_an_event_changed_by_parse_keeps_its_parsed_form(tmp_path: Path) -> None:
    # Pub/Sub attributes are added to the event: its line alone no longer says it all.
    events = [make_event("a", "heartbeat"), make_event("b", "heartbeat")]
    lines = [orjson.dumps(e) for e in events]
    got = run_stages(tmp_path, ("pubsub", 0, lines, [{"tenant": "t1"}, None]))
    first, second = got["all"]
    assert first.event == {**events[0], "attributes": {"tenant": "t1"}}
    assert second.event is lines[1]


def test_chunks_made_without_lines_keep_the_parsed_events(tmp_path: Path) -> None:
    rules = as_rules(parse_config(CONFIG.format(out=tmp_path)))
    event = make_event("x", "error")
    route, filt, package = _RouteChunk(rules), _FilterChunk(rules), _PackageChunk(rules)
    route.setup()
    (cid, routed), _ = list(route.process(Chunk([event])))
    assert raw_of(routed) is None
    ((_, items),) = list(package.process(next(iter(filt.process((cid, routed))))))
    assert items[0].event is event


def test_a_chunk_crossing_a_process_keeps_its_lines() -> None:
    chunk = Chunk([{"a": 1}], raw=[b'{"a":1}'])
    coder = ChunkCoder()
    back = coder.decode(coder.encode(chunk))
    assert back == chunk and back.raw == [b'{"a":1}']
    assert pickle.loads(pickle.dumps(Chunk([1]))).raw is None


def test_dead_letters_and_retry_records_carry_the_parsed_event() -> None:
    event = make_event("e1", "error")
    line = orjson.dumps(event)
    letter = DeadLetter.for_event("deliver", "c", line, "http_500", "boom", 500, 4)
    assert letter.event == event and letter.event_id == "e1"
    item = Packaged("e1", 1, "error", None, line, b'{"k":1}')
    stored = RetryRecord("c", "", [item], "n", 4, 0, "t", "boom", 500, 0).to_json_dict()
    (kept,) = stored["items"]
    assert kept["event"] == event and kept["record"] == {"k": 1} and kept["data"] is None
    back = RetryRecord.from_json_dict(orjson.loads(orjson.dumps(stored)))
    assert back.items[0].event == event
