"""Batch and Deliver stages: cut events into batches, hand each to its connector's sink.

Batch (backfill) mode cuts batches inside each chunk, with no shuffle: for each connector,
events are grouped by rendered prefix in input order and cut every ``batch.max_events``.
Chunk boundaries are deterministic, so a rerun of the same input produces the same
batches and therefore the same content-derived file and object names.

Delivery is shared code for every connector: the sink (created once per DoFn instance in
``setup``) writes one batch; :class:`~transforms.rules.retry.RetryPolicy` retries
retryable failures; what still fails becomes dead letters (``stage: deliver``) with the
error, status and attempt count. Nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipeline.config import DeliveryConfig, compile_connectors
from transforms import metrics
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink
from transforms.parse import DEAD_LETTER
from transforms.rules.naming import PrefixError, PrefixTemplate
from transforms.rules.records import DeadLetter, Packaged
from transforms.rules.retry import RetryPolicy


class _CutChunk(beam.DoFn):
    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.layout = {
            c.id: (
                PrefixTemplate.compile(getattr(c.deliver, "prefix", "")),
                c.deliver.batch.max_events,
            )
            for c in compile_connectors(self.config)
        }

    def process(self, element: tuple[str, list[Packaged]]) -> Iterator[Any]:
        cid, items = element
        prefix, max_events = self.layout[cid]
        by_prefix: dict[str, list[Packaged]] = {}
        failed: list[DeadLetter] = []
        if prefix.is_constant:
            by_prefix[prefix.text] = items
        else:
            for item in items:
                try:
                    key = prefix.render(cid, item.event_type, item.time_ms)
                except PrefixError as exc:
                    failed.append(
                        DeadLetter.for_event(
                            "batch", cid, item.event, "prefix_unrenderable", str(exc)
                        )
                    )
                    continue
                by_prefix.setdefault(key, []).append(item)
        for key, group in by_prefix.items():
            for start in range(0, len(group), max_events):
                yield DeliveryBatch(cid, key, group[start : start + max_events])
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)


class CutBatches(beam.PTransform):
    """``(connector_id, [Packaged])`` -> :class:`DeliveryBatch` of at most ``max_events``.

    Tagged output ``dead_letter``: events whose prefix cannot be rendered.
    """

    def __init__(self, config: DeliveryConfig):
        super().__init__()
        self.config = config

    def expand(self, records: Any) -> Any:
        return records | beam.ParDo(_CutChunk(self.config)).with_outputs(
            DEAD_LETTER, main="batches"
        )


class _DeliverBatch(beam.DoFn):
    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.sinks: dict[str, Sink] = {}
        self.policies: dict[str, RetryPolicy] = {}
        self.counters: dict[str, dict[str, Any]] = {}
        for c in compile_connectors(self.config):
            sink = make_sink(c.id, c.type, c.deliver)
            sink.open()
            self.sinks[c.id] = sink
            self.policies[c.id] = RetryPolicy(immediate=self.config.connector(c.id).retry.immediate)
            ns = metrics.connector_namespace(c.id)
            self.counters[c.id] = {
                name: Metrics.counter(ns, name) for name in metrics.CONNECTOR_COUNTERS
            }

    def process(self, batch: DeliveryBatch) -> Iterator[Any]:
        cid = batch.connector_id
        counters = self.counters[cid]
        try:
            result, attempts = self.policies[cid].call(lambda: self.sinks[cid].write(batch))
        except DeliveryError as exc:
            attempts = getattr(exc, "attempts", 1)
            counters[metrics.RETRIED_IMMEDIATE].inc(attempts - 1)
            reason = "retries_exhausted" if exc.retryable else "not_retryable"
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                [
                    DeadLetter.for_event(
                        "deliver", cid, i.event, reason, str(exc), exc.status, attempts
                    )
                    for i in batch.items
                ],
            )
            return
        counters[metrics.RETRIED_IMMEDIATE].inc(attempts - 1)
        counters[metrics.DELIVERED].inc(result.events)
        counters[metrics.WRITES].inc()
        counters[metrics.BYTES].inc(result.bytes)
        yield result

    def teardown(self) -> None:
        for sink in getattr(self, "sinks", {}).values():
            sink.close()


class Deliver(beam.PTransform):
    """:class:`DeliveryBatch` -> :class:`~transforms.connectors.base.WriteResult` per write.

    Tagged output ``dead_letter``: one list of :class:`DeadLetter` per failed batch.
    """

    def __init__(self, config: DeliveryConfig):
        super().__init__()
        self.config = config

    def expand(self, batches: Any) -> Any:
        return batches | beam.ParDo(_DeliverBatch(self.config)).with_outputs(
            DEAD_LETTER, main="written"
        )
