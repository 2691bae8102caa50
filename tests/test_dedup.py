"""The streaming Dedup stage (transforms/dedup.py): first copies go on, copies are counted.

Three levels: the whole stage on Beam's FnApiRunner for random inputs (a property: the
output is exactly the first copy of every id, raw lines still beside their events, the
counter equals the copies), the window on the streaming DirectRunner with TestStream's
processing time, and the state logic of one shard across a failed bundle (Beam's state
objects replaced by in-memory ones with commit/rollback: no runner fails a bundle on
demand, so this is the one place the test fakes Beam's interface).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import metrics
from transforms.dedup import DIGEST_BYTES, DropDuplicates, Meta, _FirstCopies, digest
from transforms.rules.records import Chunk


def _chunk(ids: list[str]) -> Chunk:
    events = [{"event_id": i, "event": {"type": "heartbeat"}} for i in ids]
    return Chunk(events, raw=[orjson.dumps(e) for e in events])


def _pairs(chunk: Chunk) -> list[tuple[str, bytes | None]]:
    """(event_id, raw line) per event: the raw line must stay beside its event."""
    raw = chunk.raw or [None] * len(chunk)
    return [(e["event_id"], r) for e, r in zip(chunk, raw, strict=True)]


def _duplicates(result: Any) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(metrics.DUPLICATES))["counters"]
    # The streaming DirectRunner reports attempted values only.
    return sum(c.committed if c.committed is not None else c.attempted for c in counters)


ids = st.text(alphabet="abcdé/\n", min_size=1, max_size=3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.lists(ids, max_size=12), min_size=1, max_size=6),
    shards=st.integers(min_value=1, max_value=5),
)
def test_exactly_the_first_copy_of_every_id_goes_on(chunks: list[list[str]], shards: int) -> None:
    everything = [i for c in chunks for i in c]
    expected = [
        (i, orjson.dumps({"event_id": i, "event": {"type": "heartbeat"}})) for i in set(everything)
    ]
    p = BeamTestPipeline(runner=FnApiRunner())
    out = (
        p
        | beam.Create([_chunk(c) for c in chunks], reshuffle=False)
        | DropDuplicates(600, shards=shards)
        | beam.FlatMap(_pairs)
    )
    assert_that(out, equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    assert _duplicates(result) == len(everything) - len(set(everything))


def test_the_window_drops_copies_while_it_remembers_and_then_lets_them_through() -> None:
    window_s = 100
    stream = (
        BeamTestStream()
        .add_elements([_chunk(["a", "b"])])
        .advance_processing_time(10)
        .add_elements([_chunk(["a", "c", "c"])])  # within the window: a and the 2nd c dropped
        .advance_processing_time(window_s * 2 + 10)
        .advance_processing_time(1)
        .add_elements([_chunk(["b", "c"])])  # both windows rotated out: at least once again
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = BeamTestPipeline(runner=BundleBasedDirectRunner(), options=options)
    out = (
        p
        | stream
        | DropDuplicates(window_s, shards=2, clock=lambda: 0.0)
        | beam.FlatMap(lambda c: [e["event_id"] for e in c])
    )
    assert_that(out, equal_to(["a", "b", "c", "b", "c"]))
    # Not the counter: this runner keeps counters of the first TestStream bundle only
    # (docs/beam-limits.md); the property above checks it on the FnApiRunner.
    p.run().wait_until_finish()


def test_a_huge_event_id_costs_the_state_sixteen_bytes() -> None:
    assert len(digest("x" * 1_000_000)) == DIGEST_BYTES == 16
    assert digest("a") != digest("b")
    assert digest("\udcff") != digest("?")  # lone surrogates (from bad JSON escapes) are kept


def test_window_and_shards_are_checked() -> None:
    for window in (0, -1, 86401):
        with pytest.raises(ValueError, match="window_s"):
            DropDuplicates(window)
    with pytest.raises(ValueError, match="shards"):
        DropDuplicates(600, shards=0)


# -- One shard's state across a failed bundle ----------------------------------------------


class _Bag:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def read(self) -> list[bytes]:
        return list(self.values)

    def add(self, value: bytes) -> None:
        self.values.append(value)

    def clear(self) -> None:
        self.values = []


class _Cell:
    def __init__(self) -> None:
        self.value: bytes | None = None

    def read(self) -> bytes | None:
        return self.value

    def write(self, value: bytes) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class _Timer:
    def __init__(self) -> None:
        self.at: Any = None

    def set(self, at: Any) -> None:
        self.at = at

    def clear(self) -> None:
        self.at = None


class _Window:
    end = 0


def _process(fn: _FirstCopies, state: dict[str, Any], ids: list[str]) -> list[str]:
    out = fn.process(
        ("0", _chunk(ids)),
        state["ids_0"],
        state["ids_1"],
        state["meta"],
        state["rotate"],
        state["end"],
        _Window(),
    )
    return [e["event_id"] for chunk in out for e in chunk]


def _fresh_state() -> dict[str, Any]:
    return {
        "ids_0": _Bag(),
        "ids_1": _Bag(),
        "meta": _Cell(),
        "rotate": _Timer(),
        "end": _Timer(),
    }


def test_a_failed_bundle_leaves_no_id_remembered() -> None:
    fn = _FirstCopies(600, clock=lambda: 0.0)
    fn.setup()
    committed = _fresh_state()
    assert _process(fn, committed, ["x", "y"]) == ["x", "y"]
    # A bundle that processes (z is new) and then fails: the runner discards its state.
    attempt = copy.deepcopy(committed)
    assert _process(fn, attempt, ["x", "z"]) == ["z"]
    # Its retry starts from the committed state: z was never seen, so it goes on.
    assert _process(fn, committed, ["x", "z"]) == ["z"]
    assert _process(fn, committed, ["z", "y"]) == []


def test_rotation_forgets_the_older_generation_only() -> None:
    fn = _FirstCopies(600, clock=lambda: 0.0)
    fn.setup()
    state = _fresh_state()
    assert _process(fn, state, ["a"]) == ["a"]
    assert state["rotate"].at is not None
    rotate = [state[k] for k in ("ids_0", "ids_1", "meta", "rotate")]
    fn._rotate("0", *rotate)  # a is now in the older generation: still remembered
    assert _process(fn, state, ["a", "b"]) == ["b"]
    fn._rotate("0", *rotate)  # a's generation cleared; b's is older now
    assert _process(fn, state, ["a", "b"]) == ["a"]
    fn._rotate("0", *rotate)
    fn._rotate("0", *rotate)
    # Nothing remembered any more: the shard holds no state and arms no timer.
    assert Meta.decode(state["meta"].read()).token == b""
    assert Counter(len(b.values) for b in (state["ids_0"], state["ids_1"])) == Counter({0: 2})
