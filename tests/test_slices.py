"""Parse hands chunks on in slices; Batch's objects do not depend on them.

Slices keep each event in the CPU's caches through Route, Filter and Package
(``transforms.parse.SLICE_LINES``); the batches, files and object names must be exactly
those of the whole chunk, whatever the slice size.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import make_event
from transforms.batch import CutBatches
from transforms.config import parse_config
from transforms.filter import FilterFields
from transforms.package import PackageRecords
from transforms.parse import ParseEvents, _ParseChunk
from transforms.route import RouteEvents
from transforms.rules.records import Chunk


def parse_slices(lines: list[bytes], size: int) -> list[list[str]]:
    """The event ids of each slice Parse sends on, in order."""
    fn = _ParseChunk(size)
    fn.setup()
    return [[e["event_id"] for e in s] for s in fn.process(("f", 0, lines)) if isinstance(s, Chunk)]


def line(n: int) -> bytes:
    return orjson.dumps(make_event(f"e{n}", "heartbeat"))


def test_parse_slices_a_chunk_in_order() -> None:
    lines = [line(n) for n in range(5)]
    assert parse_slices(lines, 2) == [["e0", "e1"], ["e2", "e3"], ["e4"]]
    assert parse_slices(lines, 5) == [["e0", "e1", "e2", "e3", "e4"]]
    assert parse_slices(lines, 100) == [["e0", "e1", "e2", "e3", "e4"]]


def test_a_slice_without_an_event_is_not_sent() -> None:
    lines = [b"", line(0), b"{bad", b"", line(1), b" "]
    assert parse_slices(lines, 2) == [["e0"], ["e1"]]


def config_text(out: Path) -> str:
    return f"""
connectors:
  - id: all
    type: file
    deliver: {{path: "{out}/all", format: ndjson, batch: {{max_events: 4}}}}
  - id: errors
    type: file
    route: {{events: [error]}}
    filter: {{metadata: {{allow: [geo]}}}}
    deliver: {{path: "{out}/errors", prefix: "{{event_type}}/", format: ndjson,
               batch: {{max_events: 3}}}}
dead_letter: {{path: "{out}/dl"}}
"""


KINDS = ["heartbeat", "error", "error", "seek", "error", "heartbeat", "error"]
EVENTS = [make_event(f"e{n}", KINDS[n % len(KINDS)]) for n in range(23)]


def chunk_lines() -> list[bytes]:
    lines = [orjson.dumps(e) for e in EVENTS]
    return [*lines[:11], b"{bad", *lines[11:]]


def expected_batches() -> list[tuple[str, str, tuple[str, ...]]]:
    """The whole chunk cut by hand: every event in batches of 4; errors in batches of 3."""
    # Batch order: event time (the same for all), then event id.
    ids = sorted(e["event_id"] for e in EVENTS)
    errors = sorted(e["event_id"] for e in EVENTS if e["event"]["type"] == "error")
    return sorted(
        [("all", "", tuple(ids[i : i + 4])) for i in range(0, len(ids), 4)]
        + [("errors", "error/", tuple(errors[i : i + 3])) for i in range(0, len(errors), 3)]
    )


@pytest.mark.parametrize("slice_lines", [1, 2, 5, 7, 1000])
def test_batches_are_those_of_the_whole_chunk_whatever_the_slices(
    tmp_path: Path, slice_lines: int
) -> None:
    config = parse_config(config_text(tmp_path))
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        parsed = p | beam.Create([("f", 0, chunk_lines())]) | ParseEvents(slice_lines)
        packaged = parsed.events | RouteEvents(config) | FilterFields(config)
        cut = (packaged | PackageRecords(config)).records | CutBatches(config)
        shapes = cut.batches | beam.Map(
            lambda b: (b.connector_id, b.prefix, tuple(i.event_id for i in b.items))
        )
        assert_that(shapes, equal_to(expected_batches()))
        assert_that(cut.dead_letter, equal_to([]), label="NoDeadLetters")
