"""Full backfill objects where workers share no disk (Dataflow, a Flink cluster).

There the records of each (connector, prefix) travel through the runner's own shuffle
(a ``GroupByKey``) and the worker that gets the key sorts them with bounded memory on its
own disk, then cuts them: the objects are those of the rule, as on one machine. With
``batch.shards: N`` a hot prefix is spread over N keys (a stable hash of the event id),
each cut on its own: full objects but the last per (connector, prefix, shard).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_backfill_objects import packaged
from transforms.batch import CutBatches
from transforms.config import parse_config
from transforms.rules.naming import (
    PrefixTemplate,
    batch_order,
    cut_batches,
    key_by_prefix,
    stable_shard,
)
from transforms.rules.records import Chunk, Packaged


def _config(out: Path, max_events: int, shards: int, prefix: str = "{event_type}/") -> Any:
    return parse_config(
        f"""
connectors:
  - id: c
    type: file
    deliver:
      path: {out}
      prefix: "{prefix}"
      format: ndjson
      batch: {{max_events: {max_events}, shards: {shards}}}
dead_letter: {{path: {out / "dl"}}}
"""
    )


def _rule(items: list[Packaged], max_events: int, shards: int) -> list[tuple[str, tuple[str, ...]]]:
    """The objects the rule asks for, written out: per (prefix, shard), in batch order."""
    groups, _ = key_by_prefix(PrefixTemplate.compile("{event_type}/"), "c", items)
    out = []
    for prefix, group in groups.items():
        by_shard = sorted(group, key=lambda i: stable_shard(i.event_id, shards))
        for _, part in itertools.groupby(by_shard, key=lambda i: stable_shard(i.event_id, shards)):
            for batch in cut_batches(sorted(part, key=batch_order), max_events):
                out.append((prefix, tuple(i.event_id for i in batch)))
    return sorted(out)


def _cut(items: list[Packaged], chunk: int, config: Any, budget: int) -> Any:
    elements = [("c", Chunk(items[n : n + chunk])) for n in range(0, len(items), chunk)]
    p = BeamTestPipeline(runner=FnApiRunner())
    cut = p | beam.Create(elements) | CutBatches(config, budget=budget, shared_disk=False)
    got = cut.batches | beam.Map(lambda b: (b.prefix, tuple(i.event_id for i in b.items)))
    return p, got, cut


@settings(max_examples=25, deadline=None)
@given(
    items=packaged(),
    max_events=st.integers(1, 9),
    shards=st.sampled_from([1, 1, 3]),
    chunk=st.integers(1, 40),
    budget=st.integers(1, 30),
)
def test_without_a_shared_disk_the_objects_are_those_of_the_rule(
    tmp_path_factory: Any,
    items: list[Packaged],
    max_events: int,
    shards: int,
    chunk: int,
    budget: int,
) -> None:
    items = [i for i in items if i.time_ms is not None]  # no event time: a dead letter
    config = _config(tmp_path_factory.mktemp("out"), max_events, shards)
    p, got, cut = _cut(items, chunk, config, budget)
    assert_that(got, equal_to(_rule(items, max_events, shards)))
    assert_that(cut.dead_letter, equal_to([]), label="NoDeadLetters")
    p.run().wait_until_finish()


def test_a_record_without_the_time_its_prefix_needs_is_a_dead_letter(tmp_path: Path) -> None:
    config = _config(tmp_path, 4, 1, prefix="{year}/")
    timeless = Packaged("e1", None, "seek", None, {"event_id": "e1"}, b"{}")
    timed = Packaged("e2", 1764136800000, "seek", None, {"event_id": "e2"}, b"{}")
    p = BeamTestPipeline(runner=FnApiRunner())
    cut = p | beam.Create([("c", Chunk([timeless, timed]))]) | CutBatches(config, shared_disk=False)
    ids = cut.batches | beam.Map(lambda b: tuple(i.event_id for i in b.items))
    assert_that(ids, equal_to([("e2",)]))
    reasons = cut.dead_letter | beam.FlatMap(lambda dls: [d.reason for d in dls])
    assert_that(reasons, equal_to(["prefix_unrenderable"]), label="Reasons")
    p.run().wait_until_finish()


def _labels(pipeline: beam.Pipeline) -> set[str]:
    seen: set[str] = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node: Any) -> None:
            seen.add(node.full_label)

        def visit_transform(self, node: Any) -> None:
            seen.add(node.full_label)

    pipeline.visit(Visitor())
    return seen


def test_the_replay_job_on_a_cluster_does_not_spill_to_one_disk(tmp_path: Path) -> None:
    """``replay`` batches like a backfill: on a cluster, through the shuffle."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.redeliver import build_replay

    config = _config(tmp_path, 4, 1)
    for flags, path in (
        (["--runner=FlinkRunner", "--flink_master=flink.example:8081"], "Batch/CutGroup"),
        (["--runner=FlinkRunner", "--flink_master=[local]"], "Batch/Runs"),
    ):
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        build_replay(pipeline, config, str(tmp_path / "dl"), None, None)
        labels = _labels(pipeline)
        assert path in labels, (flags, sorted(n for n in labels if n.startswith("Batch")))


@settings(max_examples=200, deadline=None)
@given(
    items=packaged(),
    shards=st.sampled_from([1, 3]),
    chunk=st.integers(1, 60),
    budget=st.integers(1, 40),
    part_bytes=st.sampled_from([1, 3000, 8000, 4 << 20]),
)
def test_records_go_to_the_shuffle_once_each_in_bounded_parts(
    tmp_path_factory: Any,
    items: list[Packaged],
    shards: int,
    chunk: int,
    budget: int,
    part_bytes: int,
) -> None:
    """Before the shuffle, a worker hands on a bundle's records of each key in parts."""
    from transforms import batch as batch_module

    items = [i for i in items if i.time_ms is not None]
    config = _config(tmp_path_factory.mktemp("out"), 5, shards)
    parts: list[tuple[Any, Any]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_module, "_PART_BYTES", part_bytes)  # records here are ~0.1-3 KB
        gather = batch_module._Gather(config, budget)
        gather.setup()
        gather.start_bundle()
        for n in range(0, len(items), chunk):
            for out in gather.process(("c", Chunk(items[n : n + chunk]))):
                parts.append(out)
            assert gather.waiting <= budget  # never more than the budget waits after an element
        parts += [wv.value for wv in gather.finish_bundle()]

    want: dict[Any, list[str]] = {}
    groups, _ = key_by_prefix(PrefixTemplate.compile("{event_type}/"), "c", items)
    for prefix, group in groups.items():
        for i in group:
            want.setdefault(("c", prefix, stable_shard(i.event_id, shards)), []).append(i.event_id)
    got: dict[Any, list[str]] = {}
    for key, part in parts:
        assert isinstance(part, Chunk) and part
        assert len(part) <= min(budget, batch_module._PART_RECORDS)
        # A part ends at the record that reaches the byte limit.
        assert sum(batch_module._approx_bytes(i) for i in part[:-1]) < part_bytes
        got.setdefault(key, []).extend(i.event_id for i in part)
    assert got == want  # every record once, under its own key, in input order
