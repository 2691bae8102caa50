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

import bisect
import collections
import queue
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from transforms import metrics
from transforms.config import DeliveryConfig, compile_connectors
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink
from transforms.parse import DEAD_LETTER
from transforms.rules.naming import PrefixError, PrefixTemplate, stable_shard
from transforms.rules.records import Chunk, DeadLetter, Packaged, is_last
from transforms.rules.retry import (
    Outcome,
    RetryPolicy,
    deliver_with_retries,
    settle_failures,
    spill_record,
)

RETRY = "retry"
"""Tag of Deliver's output of batches waiting for a delayed retry (:class:`RetryRecord`)."""


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
        self.split_chunks = Metrics.counter(metrics.PIPELINE, metrics.SPLIT_CHUNKS)

    def start_bundle(self) -> None:
        self.pending: dict[str, tuple[list[Packaged], Any]] = {}

    def process(
        self,
        element: tuple[str, list[Packaged]],
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        cid, items = element
        # A chunk arrives in slices (Chunk.last); cut it whole, as if it came in one piece.
        held = self.pending.get(cid)
        if held is not None:
            held[0].extend(items)
        if not is_last(items):
            if held is None:
                self.pending[cid] = (list(items), WindowedValue(None, timestamp, (window,)))
            return
        if held is not None:
            del self.pending[cid]
            items = held[0]
        yield from self._cut(cid, items)

    def finish_bundle(self) -> Iterator[Any]:
        # Slices of one chunk are outputs of one Parse call, so a runner that fuses Parse
        # with Batch (all of them: nothing between them shuffles) delivers every slice in
        # that call's bundle. Should one ever not, its slices are still cut, not dropped,
        # and the split is counted.
        for cid, (items, where) in self.pending.items():
            self.split_chunks.inc()
            for out in self._cut(cid, items):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, where.with_value(out.value))
                else:
                    yield where.with_value(out)
        self.pending = {}

    def _cut(self, cid: str, items: list[Packaged]) -> Iterator[Any]:
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
                yield DeliveryBatch(cid, key, Chunk(group[start : start + max_events]))
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
        cut = beam.ParDo(_CutChunk(self.config)).with_output_types(DeliveryBatch)
        return records | cut.with_outputs(DEAD_LETTER, main="batches")


class _KeyByPrefix(beam.DoFn):
    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.layout = {
            c.id: (PrefixTemplate.compile(getattr(c.deliver, "prefix", "")), c.deliver.batch.shards)
            for c in compile_connectors(self.config)
        }

    def process(self, element: tuple[str, list[Packaged]]) -> Iterator[Any]:
        cid, items = element
        prefix, shards = self.layout[cid]
        failed: list[DeadLetter] = []
        for item in items:
            try:
                key = prefix.render(cid, item.event_type, item.time_ms)
            except PrefixError as exc:
                failed.append(
                    DeadLetter.for_event("batch", cid, item.event, "prefix_unrenderable", str(exc))
                )
                continue
            yield (cid, key, stable_shard(item.event_id, shards)), item
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)


class _ByConnector(beam.PartitionFn):
    def __init__(self, ids: list[str]):
        self.index = {cid: n for n, cid in enumerate(ids)}

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return self.index[element[0][0]]


def _same(element: Any) -> Any:
    return element


def _to_batch(element: tuple[tuple[str, str, int], list[Packaged]]) -> DeliveryBatch:
    (cid, prefix, _), items = element
    return DeliveryBatch(cid, prefix, items)


class StreamBatches(beam.PTransform):
    """Streaming bulking: ``GroupIntoBatches`` per connector, by count and by time.

    Events are keyed by ``(connector, rendered prefix, shard)``; each connector gets its
    own ``GroupIntoBatches(max_events, max_wait_s)`` (labels ``Batch/<connector id>``),
    so a batch holds at most ``batch.max_events`` events and no event waits more than
    ``batch.max_wait_s`` of processing time, also when traffic stops (the buffering timer
    fires without new input). ``batch.shards`` spreads one hot connector over that many
    keys (hence workers); the shard is a stable hash of ``event_id``, so a redelivered
    Pub/Sub message lands in the same shard. We shard explicitly rather than with
    ``GroupIntoBatches.WithShardedKey``: on the DirectRunner the latter never flushes its
    buffer at the end of the stream (see docs/beam-limits.md).

    Output: :class:`DeliveryBatch`; tagged ``dead_letter``: events whose prefix cannot be
    rendered. ``clock`` is for tests (TestStream needs a fake clock starting at 0).
    """

    def __init__(self, config: DeliveryConfig, clock: Any = None):
        super().__init__()
        self.config = config
        self.clock = clock

    def expand(self, records: Any) -> Any:
        keyed = records | "Key" >> beam.ParDo(_KeyByPrefix(self.config)).with_outputs(
            DEAD_LETTER, main="keyed"
        )
        ids = [c.id for c in self.config.connectors]
        parts = keyed.keyed | "ByConnector" >> beam.Partition(_ByConnector(ids), len(ids))
        batches = []
        for connector, part in zip(self.config.connectors, parts, strict=True):
            limits = connector.deliver_config.batch
            extra = {"clock": self.clock} if self.clock is not None else {}
            # A typed key gives GroupIntoBatches a deterministic key coder (Partition erases
            # the element type).
            part = part | f"Typed/{connector.id}" >> beam.Map(_same).with_output_types(
                beam.typehints.Tuple[beam.typehints.Tuple[str, str, int], Any]
            )
            grouped = part | f"Batch/{connector.id}" >> beam.GroupIntoBatches(
                limits.max_events, limits.max_wait_s, **extra
            )
            batches.append(grouped | f"ToBatch/{connector.id}" >> beam.Map(_to_batch))
        merged = batches | "Batches" >> beam.Flatten()
        return {"batches": merged, DEAD_LETTER: keyed[DEAD_LETTER]}


class Delivered(NamedTuple):
    """The main output of Deliver: what one batch delivered, and where."""

    connector_id: str
    events: int
    names: tuple[str, ...]


BACKLOG_PER_THREAD = 16
"""Batches a connector may have waiting per delivery thread before it is "not keeping up"."""


class InlineExecutor:
    """Runs each submitted call at once on the calling thread; returns its done future.

    The executor of sinks that write inline (:attr:`Sink.writes_inline`), so Deliver treats
    every write alike: a future, a done-callback, the same counts and failures.
    """

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # reported through the future, as a pool's would be
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop."""


InFlight = tuple[Future[Outcome], DeliveryBatch, WindowedValue]
"""A write in progress: its future, its batch, and the window its outputs belong to."""


class _DeliverBatch(beam.DoFn):
    """Writes batches through each connector's sink, up to ``concurrency`` at once.

    Writes run on a thread pool per connector (created in ``setup``, like the sinks), so a
    slow destination occupies only its own threads; a sink whose writes are only CPU work
    (:attr:`Sink.writes_inline`: local files) writes on this thread instead. Results are
    emitted as they complete and ``finish_bundle`` waits for every write still in flight,
    so a bundle never finishes (and its input is never acknowledged) before its batches
    are delivered, waiting for a delayed retry, or dead-lettered. Metrics are counted on
    the DoFn's own thread, where Beam records them.

    Isolation: a connector may have ``concurrency * 16`` batches and ``max_pending_events``
    events in flight (but always ``concurrency`` batches). Beyond that it is not keeping up
    (down, hanging until its timeouts): with a retry location, its new batches go straight
    there (counted ``spilled``) and the other connectors continue at full speed; without
    one, the stage waits for its writes (backpressure), never drops. The cap in events
    bounds the memory held for a slow connector whatever its batch size.
    """

    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.sinks: dict[str, Sink] = {}
        self.policies: dict[str, RetryPolicy] = {}
        self.schedules: dict[str, tuple[float, ...]] = {}
        self.delayed_enabled = self.config.retry_topic is not None
        self.redelivery = RetryPolicy(immediate=0)  # a delayed attempt is one attempt
        self.pools: dict[str, ThreadPoolExecutor | InlineExecutor] = {}
        self.backlog_events: dict[str, int] = {}
        self.concurrency: dict[str, int] = {}
        self.counters: dict[str, dict[str, Any]] = {}
        self.freshness: dict[str, list[Any]] = {}
        self.distributions: dict[str, dict[str, Any]] = {}
        for c in compile_connectors(self.config):
            sink = make_sink(c.id, c.type, c.deliver)
            sink.open()
            self.sinks[c.id] = sink
            retry = self.config.connector(c.id).retry
            self.policies[c.id] = RetryPolicy(immediate=retry.immediate)
            self.schedules[c.id] = tuple(retry.delayed_schedule_s)
            self.backlog_events[c.id] = c.deliver.max_pending_events
            self.concurrency[c.id] = c.deliver.concurrency
            self.pools[c.id] = (
                InlineExecutor()
                if sink.writes_inline
                else ThreadPoolExecutor(c.deliver.concurrency, f"deliver-{c.id}")
            )
            ns = metrics.connector_namespace(c.id)
            self.counters[c.id] = {
                n: Metrics.counter(ns, n)
                for n in (*metrics.CONNECTOR_COUNTERS, metrics.FRESHNESS_UNKNOWN)
            }
            self.freshness[c.id] = [Metrics.counter(ns, n) for n in metrics.FRESHNESS_COUNTERS]
            self.distributions[c.id] = {
                n: Metrics.distribution(ns, n)
                for n in (metrics.BATCH_SIZE, metrics.DELIVERY_LATENCY_MS)
            }

    def start_bundle(self) -> None:
        # Writes report completion themselves (a done-callback puts the entry here), so
        # finding finished writes costs O(finished), not a scan of everything in flight.
        # One queue per bundle: a write can only ever complete into its own bundle.
        self.finished: queue.SimpleQueue[InFlight] = queue.SimpleQueue()
        self.in_flight: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self.in_flight_events: dict[str, int] = dict.fromkeys(self.sinks, 0)

    def process(
        self,
        batch: DeliveryBatch,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        cid = batch.connector_id
        where = WindowedValue(None, timestamp, (window,))
        yield from self._complete_done()
        if self._full(cid):
            if self.delayed_enabled and batch.retry is None:
                # This connector is not keeping up: park the batch in the retry location
                # instead of holding every other connector back (it is not lost).
                record = spill_record(
                    batch,
                    f"{self.in_flight[cid]} batches ({self.in_flight_events[cid]} events) "
                    "already in flight",
                )
                self.counters[cid][metrics.RETRIED_DELAYED].inc(len(batch.items))
                self.counters[cid][metrics.SPILLED].inc(len(batch.items))
                yield beam.pvalue.TaggedOutput(RETRY, where.with_value(record))
                return
            # No retry location: wait (backpressure) rather than drop, but for whichever
            # write finishes first (of any connector), emitting every finished one.
            while self._full(cid):
                yield from self._complete(self.finished.get())
                yield from self._complete_done()
        policy = self.redelivery if batch.retry is not None else self.policies[cid]
        future = self.pools[cid].submit(deliver_with_retries, self.sinks[cid], batch, policy)
        self.in_flight[cid] += 1
        self.in_flight_events[cid] += len(batch.items)
        finished = self.finished
        # The callback gets the future as its argument and must not hold it: a future that
        # (through its callback) refers to itself is a reference cycle, which would keep
        # every delivered batch alive until a full garbage collection (bench/RESULTS.md).
        future.add_done_callback(lambda done: finished.put((done, batch, where)))
        if future.done():  # an inline write: report it now, not with the next batch
            yield from self._complete_done()

    def _full(self, cid: str) -> bool:
        """Whether connector ``cid`` has as much in flight as it may (see the class doc)."""
        batches, threads = self.in_flight[cid], self.concurrency[cid]
        if batches >= threads * BACKLOG_PER_THREAD:
            return True
        return batches >= threads and self.in_flight_events[cid] >= self.backlog_events[cid]

    def _complete_done(self) -> Iterator[Any]:
        """Complete every write that has finished, without waiting for any."""
        finished = self.finished
        while not finished.empty():
            yield from self._complete(finished.get())

    def finish_bundle(self) -> Iterator[Any]:
        while any(self.in_flight.values()):
            yield from self._complete(self.finished.get())

    def _complete(self, entry: InFlight) -> Iterator[Any]:
        future, batch, where = entry
        cid = batch.connector_id
        self.in_flight[cid] -= 1
        self.in_flight_events[cid] -= len(batch.items)
        counters = self.counters[cid]
        try:
            outcome = future.result()
        except Exception as exc:  # a sink bug, not a delivery error: still never drop events
            text = self.sinks[cid].redact(f"{type(exc).__name__}: {exc}")
            outcome = Outcome(failed=[(i, DeliveryError(text, False), 1) for i in batch.items])
        # deliver_with_retries accounts for every event of the batch exactly once (what a
        # sink leaves unaccounted is a sink_unaccounted dead letter), so the counts add up.
        if outcome.overclaimed:
            counters[metrics.SINK_OVERCLAIMED].inc(outcome.overclaimed)
        counters[metrics.RETRIED_IMMEDIATE].inc(outcome.retries)
        counters[metrics.DELIVERED].inc(outcome.delivered)
        counters[metrics.WRITES].inc(outcome.writes)
        counters[metrics.BYTES].inc(outcome.bytes)
        counters[metrics.ALREADY_PRESENT].inc(outcome.already_present)
        counters[metrics.POSSIBLE_DUPLICATES].inc(outcome.possible_duplicates)
        if outcome.delivered:
            self._observe(cid, batch, outcome)
            yield where.with_value(Delivered(cid, outcome.delivered, tuple(outcome.names)))
        if outcome.failed:
            schedule = self.schedules[cid]
            record, letters = settle_failures(batch, outcome, schedule, self.delayed_enabled)
            if record is not None:
                counters[metrics.RETRIED_DELAYED].inc(len(record.items))
                yield beam.pvalue.TaggedOutput(RETRY, where.with_value(record))
            if letters:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, where.with_value(letters))

    def _observe(self, cid: str, batch: DeliveryBatch, outcome: Outcome) -> None:
        """Freshness (delivery time - event time) of the delivered events, and batch size.

        Per batch, not per event: the ages are sorted once and each histogram bucket is
        counted with two bisections of the sorted list.
        """
        items: Any = batch.items
        if outcome.failed:
            failed = {id(item) for item, _, _ in outcome.failed}
            items = [item for item in items if id(item) not in failed]
        times = [item.time_ms for item in items]
        now_ms = int(time.time() * 1000)
        ages = sorted([now_ms - t for t in times if t is not None])
        unknown = len(times) - len(ages)
        if ages:
            if ages[0] < 0:  # an event time in the future counts as age 0
                ages = [age if age > 0 else 0 for age in ages]
            fresh = self.freshness[cid]
            below = 0
            for n, bound in enumerate(metrics.FRESHNESS_BOUNDS_MS):
                upto = bisect.bisect_right(ages, bound, below)
                if upto > below:
                    fresh[n].inc(upto - below)
                    below = upto
                if below == len(ages):
                    break
            else:
                fresh[-1].inc(len(ages) - below)
            collections.deque(
                map(self.distributions[cid][metrics.DELIVERY_LATENCY_MS].update, ages), 0
            )
        if unknown:
            self.counters[cid][metrics.FRESHNESS_UNKNOWN].inc(unknown)
        self.distributions[cid][metrics.BATCH_SIZE].update(outcome.delivered)

    def teardown(self) -> None:
        for pool in getattr(self, "pools", {}).values():
            pool.shutdown(wait=True)
        for sink in getattr(self, "sinks", {}).values():
            sink.close()


class Deliver(beam.PTransform):
    """:class:`DeliveryBatch` -> :class:`Delivered`, one per batch that delivered events.

    Tagged outputs: ``dead_letter``, a list of :class:`DeadLetter` per batch with events
    that failed for good; ``retry``, a :class:`RetryRecord` per batch with events waiting
    for a delayed retry.
    """

    def __init__(self, config: DeliveryConfig):
        super().__init__()
        self.config = config

    def expand(self, batches: Any) -> Any:
        return batches | beam.ParDo(_DeliverBatch(self.config)).with_outputs(
            DEAD_LETTER, RETRY, main="written"
        )
