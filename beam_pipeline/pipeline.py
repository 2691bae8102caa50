"""Pipeline assembly: ``build_pipeline(p, config, options)`` wires the five stages.

The graph, with the stable labels that show in the Dataflow and Flink UIs::

    Read -> Parse -> Route -> Filter -> Package -> Batch -> Deliver --retry--> DelayedRetries
                                                            ^                    |
                                  Retries (streaming, Pub/Sub: hold until due) --+
              |                            |         |         |
              +------------- dead_letter --+---------+---------+--> DeadLetters

It is separate from the command line so that tests build the same graph on a
``TestPipeline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from beam_pipeline.runners import shares_local_disk
from transforms.batch import CutBatches, StreamBatches
from transforms.config import DeliveryConfig
from transforms.connectors.secrets import ConfigSecrets
from transforms.dead_letters import PublishDeadLetters, WriteDeadLetters
from transforms.dedup import DEFAULT_DEDUP_WINDOW_S, DropDuplicates
from transforms.deliver import RETRY, Deliver
from transforms.filter import FilterFields
from transforms.live import LiveRules
from transforms.package import PackageRecords
from transforms.parse import (
    DEAD_LETTER,
    DEFAULT_CHUNK_LINES,
    ParseEvents,
    ReadEventChunks,
    ReadPubSubChunks,
)
from transforms.pubsub_read import PubSubReading
from transforms.retry import REQUEUE, HoldRetries, PublishRetries, ReadRetries, WriteRetries
from transforms.route import RouteEvents


@dataclass(frozen=True)
class Streaming:
    """How :func:`build_delivery` runs a streaming graph (``None`` there: batch).

    Attributes:
        reading: how subscriptions are read (see :mod:`transforms.pubsub_read`).
        rules: route/filter/package rules that follow a config changing while the job
            runs (:mod:`transforms.live`); default the config's, fixed.
        dedup_window_s: how long the event ids that went on are remembered, to drop
            Pub/Sub redeliveries before Route (:class:`~transforms.dedup.DropDuplicates`);
            0 turns it off.
        clock: for tests: the processing clock of every ``GroupIntoBatches`` and of the
            dedup window (TestStream needs a fake one).
        retry_messages: for tests: a PCollection replacing the read of
            ``retry_subscription`` (with a Pub/Sub retry topic).
    """

    reading: PubSubReading | None = None
    rules: LiveRules | None = None
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    clock: Any = None
    retry_messages: Any = None


def build_delivery(
    chunks: Any,
    config: DeliveryConfig,
    streaming: Streaming | None = None,
    read_failures: Any = None,
    shared_disk: bool = True,
) -> dict[str, Any]:
    """Wire Parse -> ... -> Deliver onto a PCollection of raw line chunks.

    ``streaming`` (a :class:`Streaming`) selects the streaming graph: ``GroupIntoBatches``
    per connector by count and processing time instead of deterministic cuts inside each
    chunk, retries held or read back from Pub/Sub, dead letters bulked by time.
    ``read_failures`` (lists of dead letters of the read, e.g. unreadable files) join the
    other failures. ``shared_disk``: batch only, whether every worker sees one local disk
    (full objects from runs spilled before a GroupByKey) or not (the records themselves go
    through the runner's shuffle; see :class:`CutBatches`).

    Returns the ``written`` (one :class:`~transforms.deliver.Delivered` per batch),
    ``dead_letters`` (paths of dead-letter files) and, with a ``retry_location``, ``retries``
    (paths of retry records) PCollections.
    """
    clock = streaming.clock if streaming else None
    parsed = chunks | "Parse" >> ParseEvents()
    live = streaming.rules if streaming and streaming.rules else LiveRules(config)
    events = parsed.events
    if streaming and streaming.dedup_window_s > 0:
        events = events | "Dedup" >> DropDuplicates(streaming.dedup_window_s, clock=clock)
    routed = events | "Route" >> RouteEvents(live)
    filtered = routed | "Filter" >> FilterFields(live)
    packaged = filtered | "Package" >> PackageRecords(live)
    if streaming:
        batches = packaged.records | "Batch" >> StreamBatches(config, clock)
        ready, unbatchable = batches["batches"], batches[DEAD_LETTER]
    else:
        cut = packaged.records | "Batch" >> CutBatches(config, shared_disk=shared_disk)
        ready, unbatchable = cut.batches, cut[DEAD_LETTER]
    extra_failures = [] if read_failures is None else [read_failures]
    requeued = []
    if streaming and config.retry_on_pubsub:
        assert config.retry_subscription is not None
        if streaming.retry_messages is not None:
            held = streaming.retry_messages | "Retries" >> HoldRetries(config)
        else:
            held = chunks.pipeline | "Retries" >> ReadRetries(
                config.retry_subscription, streaming.reading, config
            )
        ready = (ready, held.due) | "FreshAndDue" >> beam.Flatten()
        extra_failures.append(held.invalid)
        requeued.append(held[REQUEUE])
    delivered = ready | "Deliver" >> Deliver(config, announce=streaming is not None)
    failures = (
        parsed[DEAD_LETTER],
        packaged[DEAD_LETTER],
        unbatchable,
        delivered[DEAD_LETTER],
        *extra_failures,
    ) | "CollectFailures" >> beam.Flatten()
    limits = config.dead_letter.batch
    # The writers read the config's secret values on the workers, to keep them out.
    secrets = ConfigSecrets(config)
    if config.dead_letter.topic is not None:
        dead = failures | "DeadLetters" >> PublishDeadLetters(config.dead_letter.topic, secrets)
    else:
        dead = failures | "DeadLetters" >> WriteDeadLetters(
            config.dead_letter.location,
            streaming is not None,
            clock,
            limits.max_events,
            limits.max_wait_s,
            secrets,
            announce=[c.id for c in config.connectors] if streaming else (),
        )
    out = {"written": delivered.written, "dead_letters": dead}
    if config.retry_on_pubsub:
        assert config.retry_location is not None
        # Records still waiting when the input ends go back to the topic, unchanged.
        waiting = (delivered[RETRY], *requeued) | "WaitingRetries" >> beam.Flatten()
        out["retries"] = waiting | "DelayedRetries" >> PublishRetries(
            config.retry_location, secrets
        )
    elif config.retry_location is not None:
        out["retries"] = delivered[RETRY] | "DelayedRetries" >> WriteRetries(
            config.retry_location, secrets
        )
    return out


def build_pipeline(
    p: beam.Pipeline,
    config: DeliveryConfig,
    inputs: list[str],
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    shards: int = 1,
) -> dict[str, Any]:
    """Build the batch (backfill) job on ``p``: read ``inputs`` and deliver per ``config``.

    ``shards``: how many workers read each file (see :class:`ReadEventChunks`).
    """
    read = p | "Read" >> ReadEventChunks(inputs, chunk_lines, shards)
    # Runs spilled before the GroupByKey need every worker on one disk; else the shuffle.
    return build_delivery(
        read.chunks, config, read_failures=read[DEAD_LETTER], shared_disk=shares_local_disk(p)
    )


def build_streaming_pipeline(
    p: beam.Pipeline,
    config: DeliveryConfig,
    subscription: str | None = None,
    topic: str | None = None,
    timestamp_attribute: str | None = None,
    clock: Any = None,
    config_source: str | None = None,
    config_refresh_s: float | None = None,
    reading: PubSubReading | None = None,
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
) -> dict[str, Any]:
    """Build the streaming job on ``p``: read Pub/Sub and deliver per ``config``.

    The same stages as batch; only Read (Pub/Sub) and Batch (``GroupIntoBatches``) differ.
    With ``config_refresh_s``, route/filter/package rules are re-read from
    ``config_source`` that often and applied without a restart.
    """
    rules = LiveRules(config, config_source, config_refresh_s) if config_refresh_s else None
    chunks = p | "Read" >> ReadPubSubChunks(
        subscription, topic, timestamp_attribute, reading=reading
    )
    mode = Streaming(reading=reading, rules=rules, dedup_window_s=dedup_window_s, clock=clock)
    return build_delivery(chunks, config, mode)
