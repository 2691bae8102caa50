"""Stable metric names, shared by every stage and by the run summary.

Pipeline-wide counters live in namespace ``telemetry``; per-connector counters in
``connector.<id>``, so the Dataflow and Flink UIs group them by connector::

    telemetry/lines_read  telemetry/blank_lines  telemetry/invalid  telemetry/events
    telemetry/unmatched   telemetry/duplicates  connector.<id>/routed  connector.<id>/delivered
    connector.<id>/dead_lettered  connector.<id>/writes  connector.<id>/bytes
    connector.<id>/retried_immediate  connector.<id>/retried_delayed  connector.<id>/replayed
    connector.<id>/dropped  connector.<id>/fanned_out

Plus per connector a freshness histogram (``freshness_le_<n>ms`` counters), the
distributions ``batch_size``, ``delivery_latency_ms`` and ``events_per_write``, a histogram
of events per write (``events_per_write.<low>-<high>`` counters), and
``dead_lettered.<reason>``.

``retried_delayed`` counts events handed to the delayed retry (waiting in the retry
location); ``already_present`` counts delivered events whose object a create-only write
found already there (a retried or rerun batch, not a duplicate); ``replayed`` counts
dead letters sent back by the ``replay`` command; ``possible_duplicates`` counts events
delivered after an attempt whose outcome was unknown (a read timeout: the destination may
have stored them already); ``spilled`` counts events parked in the retry location
without an attempt because their connector was not keeping up;
``retry_due`` and ``retry_waiting`` count events the ``retry`` command found due (and
redelivered) or not yet due (left waiting); ``dropped`` and ``fanned_out`` count what a
``package.function`` did: events it returned None for (no record), and records it made
beyond one per event.
"""

from __future__ import annotations

import math
from typing import Any

PIPELINE = "telemetry"
"""Namespace of the pipeline-wide counters."""

LINES_READ = "lines_read"
BLANK_LINES = "blank_lines"
INVALID = "invalid"
EVENTS = "events"
UNMATCHED = "unmatched"

ROUTED = "routed"
DELIVERED = "delivered"
DEAD_LETTERED = "dead_lettered"
WRITES = "writes"
BYTES = "bytes"
RETRIED_IMMEDIATE = "retried_immediate"
RETRIED_DELAYED = "retried_delayed"
REPLAYED = "replayed"
ALREADY_PRESENT = "already_present"
POSSIBLE_DUPLICATES = "possible_duplicates"
SPILLED = "spilled"
SINK_OVERCLAIMED = "sink_overclaimed"
"""Events a sink claimed beyond its batch (a sink bug; capped, never counted delivered)."""
DUPLICATES = "duplicates"
"""Streaming, pipeline-wide: parsed copies of an ``event_id`` dropped within the dedup
window (a Pub/Sub redelivery or a publisher's retry) before Route; see transforms/dedup.py."""
RETRY_DUE = "retry_due"
RETRY_WAITING = "retry_waiting"
DROPPED = "dropped"
"""Events a ``package.function`` returned None (or ``[]``) for: settled, with no record."""
FANNED_OUT = "fanned_out"
"""Records a ``package.function`` made beyond one per event (a list of k records adds
k - 1), each settled like any other record."""

CONNECTOR_COUNTERS = (
    ROUTED,
    DELIVERED,
    DEAD_LETTERED,
    WRITES,
    BYTES,
    RETRIED_IMMEDIATE,
    RETRIED_DELAYED,
    REPLAYED,
    RETRY_DUE,
    RETRY_WAITING,
    ALREADY_PRESENT,
    POSSIBLE_DUPLICATES,
    SPILLED,
    SINK_OVERCLAIMED,
    DROPPED,
    FANNED_OUT,
)
"""Every counter each connector reports, in summary order."""


def connector_namespace(connector_id: str) -> str:
    """The metrics namespace of one connector."""
    return f"connector.{connector_id}"


FRESHNESS_BOUNDS_MS = (
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
    21_600_000,
    86_400_000,
    604_800_000,
    2_592_000_000,
    7_776_000_000,
    31_536_000_000,
)
"""Upper bounds of the freshness histogram buckets (ms); a last bucket holds the rest."""

FRESHNESS_UNKNOWN = "freshness_unknown"
"""Delivered events without a readable event time (no freshness)."""

BATCH_SIZE = "batch_size"
DELIVERY_LATENCY_MS = "delivery_latency_ms"
"""Distributions per connector: events per batch, and delivery time minus event time."""

EVENTS_PER_WRITE = "events_per_write"
"""Distribution per connector: the events of each counted write (exact min, max, mean).

A write is what ``writes`` counts: one file or object for file and object-store
connectors; one successful ``write`` of a batch for the others (an API connector may
send it as several requests). So events per write means the same for every connector,
and ``count`` equals ``writes``.
"""

EVENTS_PER_WRITE_STEPS = 4
"""Buckets of the events-per-write histogram per doubling: bounds grow by 2**(1/4) (~19%)."""


def events_per_write_bucket(events: int) -> int:
    """The histogram bucket of a write of ``events`` events: ``floor(4 * log2(events))``.

    Computed on integers (``events**4 >= 2**k``), so a bound is never misplaced by float
    rounding: ``events_per_write_bucket(1000) == 39`` (2**9.75 = 861.1 <= 1000 < 1024).
    A write of no event (a create-only write that found its object there) is bucket -1.
    """
    if events < 1:
        return -1
    return (events**EVENTS_PER_WRITE_STEPS).bit_length() - 1


def _lowest(bucket: int) -> int:
    """The smallest integer whose bucket is at least ``bucket``: ``ceil(2**(bucket / 4))``."""
    if bucket < 0:
        return 0
    root = math.isqrt(math.isqrt(1 << bucket))  # floor of the 4th root, exactly
    return root if root**EVENTS_PER_WRITE_STEPS >= 1 << bucket else root + 1


def events_per_write_bounds(bucket: int) -> tuple[int, int]:
    """The sizes bucket ``bucket`` holds, both included: ``(862, 1023)`` for bucket 39.

    Only buckets that hold an integer are ever counted (bucket 1, 2**0.25 to 2**0.5,
    holds none).
    """
    return _lowest(bucket), _lowest(bucket + 1) - 1


EVENTS_PER_WRITE_PREFIX = EVENTS_PER_WRITE + "."


def events_per_write_counter(events: int) -> str:
    """The histogram counter of a write of ``events`` events: ``events_per_write.862-1023``.

    The name carries the bucket's bounds, so the summary reads them back from the name and
    the UIs show them; counters exist only for buckets some write fell in.
    """
    low, high = events_per_write_bounds(events_per_write_bucket(events))
    return f"{EVENTS_PER_WRITE_PREFIX}{low}-{high}"


def freshness_counter(bucket: int) -> str:
    """The counter name of freshness bucket ``bucket`` (an index into the bounds, or past them)."""
    if bucket < len(FRESHNESS_BOUNDS_MS):
        return f"freshness_le_{FRESHNESS_BOUNDS_MS[bucket]}ms"
    return "freshness_gt_365d"


FRESHNESS_COUNTERS = tuple(freshness_counter(i) for i in range(len(FRESHNESS_BOUNDS_MS) + 1))
"""Histogram of freshness (delivery time - event.timestamp) per connector, as counters.

Beam distributions only keep min, max, mean and count; percentiles (p50/p95/p99 in the
summary and report) come from these buckets.
"""


def dead_letter_reason_counter(reason: str) -> str:
    """The counter of dead letters with this reason (per connector, or for input)."""
    return f"dead_lettered.{reason}"


def with_announcement(pcoll: Any, sentinel: Any) -> Any:
    """``pcoll`` plus one ``sentinel`` element from an ``Impulse`` at start-up.

    The stage that reads it reports its counters at 0 on the sentinel, before any real
    element, so Prism learns their ids first (``Deliver(announce=True)``,
    ``WriteDeadLetters(announce=...)``; docs/beam-limits.md, "Prism can under-report").
    Labels ``Announce``, ``Sentinel`` and ``WithAnnounce`` within the calling transform.
    """
    import apache_beam as beam

    first = (
        pcoll.pipeline
        | "Announce" >> beam.Impulse()
        | "Sentinel" >> beam.Map(lambda _, value=sentinel: value)
    )
    return (pcoll, first) | "WithAnnounce" >> beam.Flatten()
