"""Pipeline assembly: ``build_pipeline(p, config, options)`` wires the five stages.

The graph, with the stable labels that show in the Dataflow and Flink UIs::

    Read -> Parse -> Route -> Filter -> Package -> Batch -> Deliver --retry--> DelayedRetries
              |                            |         |         |
              +------------- dead_letter --+---------+---------+--> DeadLetters

It is separate from the command line so that tests build the same graph on a
``TestPipeline``.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from beam_pipeline.config import DeliveryConfig
from transforms.deliver import RETRY, CutBatches, Deliver
from transforms.filter import FilterFields
from transforms.package import PackageRecords
from transforms.parse import DEAD_LETTER, DEFAULT_CHUNK_LINES, ParseEvents, ReadEventChunks
from transforms.retry import WriteDeadLetters, WriteRetries
from transforms.route import RouteEvents


def build_delivery(chunks: Any, config: DeliveryConfig) -> dict[str, Any]:
    """Wire Parse -> ... -> Deliver onto a PCollection of raw line chunks.

    Returns the ``written`` (one WriteResult per file/object/request) and ``dead_letters``
    (paths of dead-letter files) PCollections.
    """
    parsed = chunks | "Parse" >> ParseEvents()
    routed = parsed.events | "Route" >> RouteEvents(config)
    filtered = routed | "Filter" >> FilterFields(config)
    packaged = filtered | "Package" >> PackageRecords(config)
    batches = packaged.records | "Batch" >> CutBatches(config)
    delivered = batches.batches | "Deliver" >> Deliver(config)
    failures = (
        parsed[DEAD_LETTER],
        packaged[DEAD_LETTER],
        batches[DEAD_LETTER],
        delivered[DEAD_LETTER],
    ) | "CollectFailures" >> beam.Flatten()
    dead = failures | "DeadLetters" >> WriteDeadLetters(config.dead_letter.path)
    out = {"written": delivered.written, "dead_letters": dead}
    if config.retry_topic is not None:
        out["retries"] = delivered[RETRY] | "DelayedRetries" >> WriteRetries(config.retry_topic)
    return out


def build_pipeline(
    p: beam.Pipeline,
    config: DeliveryConfig,
    inputs: list[str],
    chunk_lines: int = DEFAULT_CHUNK_LINES,
) -> dict[str, Any]:
    """Build the batch (backfill) job on ``p``: read ``inputs`` and deliver per ``config``."""
    chunks = p | "Read" >> ReadEventChunks(inputs, chunk_lines)
    return build_delivery(chunks, config)
