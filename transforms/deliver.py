"""Deliver stage: hand each :class:`DeliveryBatch` to its connector's sink.

Delivery is shared code for every connector: the sink (created once per DoFn instance in
``setup``) writes one batch; :class:`~transforms.rules.retry.RetryPolicy` retries
retryable failures; what still fails becomes dead letters (``stage: deliver``) with the
error, status and attempt count. Nothing is dropped. Each connector delivers in its own
lane (its sink, retry rules, writer threads, limits and metrics), so one slow destination
does not hold the others back::

    batches | "Deliver" >> Deliver(config)
    # -> written: Delivered("archive", 1000, ("raw/2025/11/26/06/archive-1f2e.ndjson.gz",))
    #    retry: RetryRecord per batch waiting for a delayed retry
    #    dead_letter: [DeadLetter, ...] per batch with events that failed for good

The batches come from the Batch stage (:mod:`transforms.batch`).
"""

from __future__ import annotations

import bisect
import collections
import queue
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from transforms import metrics
from transforms.config import CompiledConnector, DeliveryConfig, compile_connectors
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink
from transforms.parse import DEAD_LETTER
from transforms.rules.retry import (
    Outcome,
    RetryPolicy,
    deliver_with_retries,
    settle_failures,
    spill_record,
)

RETRY = "retry"
"""Tag of Deliver's output of batches waiting for a delayed retry (:class:`RetryRecord`)."""
ANNOUNCE = DeliveryBatch("", "", ())
"""The empty batch that makes Deliver report every counter at 0 (``Deliver(announce=True)``)."""


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


@dataclass(slots=True, eq=False)
class _Lane:
    """One connector's way out: its sink, retry rules, writer pool, limits and metrics.

    ``in_flight`` and ``in_flight_events`` count the batches (and their events) submitted
    in the current bundle and not completed yet; :meth:`full` compares them with the
    limits. E.g. a lane with ``concurrency`` 2 and ``max_pending_events`` 25 is full at
    32 batches in flight, or at 2 batches holding 25 events or more.
    """

    sink: Sink
    policy: RetryPolicy
    schedule: tuple[float, ...]
    """The delayed retry schedule (``retry.delayed_schedule_s``)."""
    pool: ThreadPoolExecutor | InlineExecutor
    concurrency: int
    max_pending_events: int
    counters: dict[str, Any]
    """Connector counters by name (:data:`metrics.CONNECTOR_COUNTERS`, freshness_unknown)."""
    freshness: list[Any]
    """One counter per freshness bucket (:data:`metrics.FRESHNESS_COUNTERS`)."""
    distributions: dict[str, Any]
    namespace: str
    """The connector's metrics namespace (:func:`metrics.connector_namespace`)."""
    in_flight: int = 0
    in_flight_events: int = 0
    write_sizes: dict[int, Any] = field(default_factory=dict)
    """Events-per-write histogram counters by bucket, created as writes fall in them."""

    @classmethod
    def open(cls, connector: CompiledConnector, config: DeliveryConfig) -> _Lane:
        """Open the connector's sink and build its lane (the sink is closed on failure)."""
        cid, deliver = connector.id, connector.deliver
        sink = make_sink(cid, connector.type, deliver)
        sink.open()
        try:
            retry = config.connector(cid).retry
            ns = metrics.connector_namespace(cid)
            return cls(
                sink=sink,
                policy=RetryPolicy(immediate=retry.immediate),
                schedule=tuple(retry.delayed_schedule_s),
                # A pool starts its threads on first use: nothing to stop if this fails.
                pool=(
                    InlineExecutor()
                    if sink.writes_inline
                    else ThreadPoolExecutor(deliver.concurrency, f"deliver-{cid}")
                ),
                concurrency=deliver.concurrency,
                max_pending_events=deliver.max_pending_events,
                counters={
                    n: Metrics.counter(ns, n)
                    for n in (*metrics.CONNECTOR_COUNTERS, metrics.FRESHNESS_UNKNOWN)
                },
                freshness=[Metrics.counter(ns, n) for n in metrics.FRESHNESS_COUNTERS],
                distributions={
                    n: Metrics.distribution(ns, n)
                    for n in (
                        metrics.BATCH_SIZE,
                        metrics.DELIVERY_LATENCY_MS,
                        metrics.EVENTS_PER_WRITE,
                    )
                },
                namespace=ns,
            )
        except BaseException:
            sink.close()
            raise

    def full(self) -> bool:
        """Whether this connector has as much in flight as it may (see :class:`_DeliverBatch`)."""
        batches, threads = self.in_flight, self.concurrency
        if batches >= threads * BACKLOG_PER_THREAD:
            return True
        return batches >= threads and self.in_flight_events >= self.max_pending_events

    def submit(self, batch: DeliveryBatch, policy: RetryPolicy) -> Future[Outcome]:
        """Start writing ``batch`` (with retries by ``policy``) and count it in flight."""
        future = self.pool.submit(deliver_with_retries, self.sink, batch, policy)
        self.in_flight += 1
        self.in_flight_events += len(batch.items)
        return future

    def count(self, outcome: Outcome) -> None:
        """Count what one write did."""
        counters = self.counters
        if outcome.overclaimed:
            counters[metrics.SINK_OVERCLAIMED].inc(outcome.overclaimed)
        counters[metrics.RETRIED_IMMEDIATE].inc(outcome.retries)
        counters[metrics.DELIVERED].inc(outcome.delivered)
        counters[metrics.WRITES].inc(outcome.writes)
        counters[metrics.BYTES].inc(outcome.bytes)
        counters[metrics.ALREADY_PRESENT].inc(outcome.already_present)
        counters[metrics.POSSIBLE_DUPLICATES].inc(outcome.possible_duplicates)
        if outcome.writes:
            self.count_sizes(outcome.sizes)

    def count_sizes(self, sizes: list[int]) -> None:
        """Count the events of each write: the distribution and the histogram bucket."""
        spread = self.distributions[metrics.EVENTS_PER_WRITE]
        histogram = self.write_sizes
        for events in sizes:
            spread.update(events)
            bucket = metrics.events_per_write_bucket(events)
            counter = histogram.get(bucket)
            if counter is None:
                # Only buckets some write falls in exist, so the summary and the UIs list
                # just those (a run's sizes span a few of the ~40 up to 1,000 events).
                counter = histogram[bucket] = Metrics.counter(
                    self.namespace, metrics.events_per_write_counter(events)
                )
            counter.inc()

    def observe(self, batch: DeliveryBatch, outcome: Outcome) -> None:
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
            fresh = self.freshness
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
            collections.deque(map(self.distributions[metrics.DELIVERY_LATENCY_MS].update, ages), 0)
        if unknown:
            self.counters[metrics.FRESHNESS_UNKNOWN].inc(unknown)
        self.distributions[metrics.BATCH_SIZE].update(outcome.delivered)


class _DeliverBatch(beam.DoFn):
    """Writes batches through each connector's sink, up to ``concurrency`` at once.

    Each connector has its own :class:`_Lane` (created in ``setup``). Writes run on a
    thread pool per connector, so a slow destination occupies only its own threads; a
    sink whose writes are only CPU work (:attr:`Sink.writes_inline`: local files) writes
    on this thread instead. Results are emitted as they complete and ``finish_bundle``
    waits for every write still in flight, so a bundle never finishes (and its input is
    never acknowledged) before its batches are delivered, waiting for a delayed retry, or
    dead-lettered. Metrics are counted on the DoFn's own thread, where Beam records them.

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
        self.delayed_enabled = self.config.retry_location is not None
        self.redelivery = RetryPolicy(immediate=0)  # a delayed attempt is one attempt
        # Filled lane by lane: should one fail to open, teardown still closes the others.
        self.lanes: dict[str, _Lane] = {}
        for c in compile_connectors(self.config):
            self.lanes[c.id] = _Lane.open(c, self.config)

    def start_bundle(self) -> None:
        # Writes report completion themselves (a done-callback puts the entry here), so
        # finding finished writes costs O(finished), not a scan of everything in flight.
        # One queue per bundle: a write can only ever complete into its own bundle.
        self.finished: queue.SimpleQueue[InFlight] = queue.SimpleQueue()
        for lane in self.lanes.values():
            lane.in_flight = lane.in_flight_events = 0

    def process(
        self,
        batch: DeliveryBatch,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        if not batch.connector_id:  # ANNOUNCE
            self._announce()
            return
        lane = self.lanes[batch.connector_id]
        where = WindowedValue(None, timestamp, (window,))
        yield from self._complete_done()
        if lane.full():
            if self.delayed_enabled and batch.retry is None:
                # This connector is not keeping up: park the batch in the retry location
                # instead of holding every other connector back (it is not lost).
                record = spill_record(
                    batch,
                    f"{lane.in_flight} batches ({lane.in_flight_events} events) already in flight",
                )
                lane.counters[metrics.RETRIED_DELAYED].inc(len(batch.items))
                lane.counters[metrics.SPILLED].inc(len(batch.items))
                yield beam.pvalue.TaggedOutput(RETRY, where.with_value(record))
                return
            # No retry location: wait (backpressure) rather than drop, but for whichever
            # write finishes first (of any connector), emitting every finished one.
            while lane.full():
                yield from self._complete(self.finished.get())
                yield from self._complete_done()
        future = lane.submit(batch, self.redelivery if batch.retry is not None else lane.policy)
        finished = self.finished
        # The callback gets the future as its argument and must not hold it: a future that
        # (through its callback) refers to itself is a reference cycle, which would keep
        # every delivered batch alive until a full garbage collection (bench/RESULTS.md).
        future.add_done_callback(lambda done: finished.put((done, batch, where)))
        if future.done():  # an inline write: report it now, not with the next batch
            yield from self._complete_done()

    def _announce(self) -> None:
        """Report every connector's counters at 0 (see :class:`Deliver`'s ``announce``)."""
        for lane in self.lanes.values():
            for counter in (*lane.counters.values(), *lane.freshness):
                counter.inc(0)

    def _complete_done(self) -> Iterator[Any]:
        """Complete every write that has finished, without waiting for any."""
        finished = self.finished
        while not finished.empty():
            yield from self._complete(finished.get())

    def finish_bundle(self) -> Iterator[Any]:
        while any(lane.in_flight for lane in self.lanes.values()):
            yield from self._complete(self.finished.get())

    def _complete(self, entry: InFlight) -> Iterator[Any]:
        future, batch, where = entry
        cid = batch.connector_id
        lane = self.lanes[cid]
        lane.in_flight -= 1
        lane.in_flight_events -= len(batch.items)
        try:
            outcome = future.result()
        except Exception as exc:  # a sink bug, not a delivery error: still never drop events
            text = lane.sink.redact(f"{type(exc).__name__}: {exc}")
            outcome = Outcome(failed=[(i, DeliveryError(text, False), 1) for i in batch.items])
        # deliver_with_retries accounts for every event of the batch exactly once (what a
        # sink leaves unaccounted is a sink_unaccounted dead letter), so the counts add up.
        lane.count(outcome)
        if outcome.delivered:
            lane.observe(batch, outcome)
            yield where.with_value(Delivered(cid, outcome.delivered, tuple(outcome.names)))
        if outcome.failed:
            record, letters = settle_failures(batch, outcome, lane.schedule, self.delayed_enabled)
            if record is not None:
                lane.counters[metrics.RETRIED_DELAYED].inc(len(record.items))
                yield beam.pvalue.TaggedOutput(RETRY, where.with_value(record))
            if letters:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, where.with_value(letters))

    def teardown(self) -> None:
        lanes = getattr(self, "lanes", {}).values()
        for lane in lanes:
            lane.pool.shutdown(wait=True)
        for lane in lanes:
            lane.sink.close()


class Deliver(beam.PTransform):
    """:class:`DeliveryBatch` -> :class:`Delivered`, one per batch that delivered events.

    Tagged outputs: ``dead_letter``, a list of :class:`DeadLetter` per batch with events
    that failed for good; ``retry``, a :class:`RetryRecord` per batch with events waiting
    for a delayed retry.

    ``announce`` (streaming): one empty batch (:data:`ANNOUNCE`, from an ``Impulse``) makes
    the stage report every connector's counters at 0 before any batch arrives. Prism 2.77
    keeps the first report of a counter it does not know yet per short id until it has
    asked the SDK what the id means, so two bundles that first report the same counter at
    once lose one's value (docs/beam-limits.md, "Prism can under-report"); a report of 0
    first makes every later one known. Harmless elsewhere.
    """

    def __init__(self, config: DeliveryConfig, announce: bool = False):
        super().__init__()
        self.config = config
        self.announce = announce

    def expand(self, batches: Any) -> Any:
        if self.announce:
            batches = metrics.with_announcement(batches, ANNOUNCE)
        return batches | beam.ParDo(_DeliverBatch(self.config)).with_outputs(
            DEAD_LETTER, RETRY, main="written"
        )
