"""The hot path frees what it delivers by reference counting alone.

The job raises the garbage collector's young threshold (``transforms.runtime.tune_gc``)
because its hot path makes no reference cycles: each delivered batch (its events and
packaged records) must be freed as soon as Deliver is done with it, not at some later
full collection. A cycle there (a future whose done-callback refers to the future, found
in session 4) kept every batch of a 1M-event run alive until a full collection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.config import parse_config
from transforms.connectors.base import DeliveryBatch
from transforms.deliver import _DeliverBatch
from transforms.rules.records import Packaged

BATCHES = 40


def batches(connector: str) -> Iterator[DeliveryBatch]:
    for b in range(BATCHES):
        items = [
            Packaged(f"e{b}-{i}", 1764136800123, "heartbeat", {"n": [i]}, {"event": {"n": i}})
            for i in range(25)
        ]
        yield DeliveryBatch(connector, "", items)


def alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("writes", ["inline", "threads"])
def test_delivered_batches_are_freed_without_the_collector(
    tmp_path: Path, no_collector: None, writes: str
) -> None:
    config = parse_config(
        f"""
connectors:
  - id: files
    type: file
    deliver: {{path: "{tmp_path}/out", format: ndjson.gz, concurrency: 4}}
dead_letter: {{path: "{tmp_path}/dl"}}
"""
    )
    fn = _DeliverBatch(config)
    fn.setup()
    if writes == "threads":  # local files write inline; check the pool's path as well
        fn.lanes["files"].pool = ThreadPoolExecutor(4)
    try:
        before = alive(DeliveryBatch), alive(Packaged)
        fn.start_bundle()
        outputs = []
        for batch in batches("files"):
            outputs.extend(fn.process(batch, window=GlobalWindow(), timestamp=Timestamp(0)))
        outputs.extend(fn.finish_bundle())
        delivered = sum(o.value.events for o in outputs if hasattr(o, "value"))
        assert delivered == BATCHES * 25
        del outputs, batch
        # With the collector off, only reference counting frees objects: a cycle through
        # a batch keeps it (and its records) in the heap.
        assert (alive(DeliveryBatch), alive(Packaged)) == before
    finally:
        fn.teardown()
