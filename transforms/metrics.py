"""Stable metric names, shared by every stage and by the run summary.

Pipeline-wide counters live in namespace ``telemetry``; per-connector counters in
``connector.<id>``, so the Dataflow and Flink UIs group them by connector::

    telemetry/lines_read  telemetry/blank_lines  telemetry/invalid  telemetry/events
    telemetry/unmatched   connector.<id>/routed  connector.<id>/delivered
    connector.<id>/dead_lettered  connector.<id>/writes  connector.<id>/bytes
    connector.<id>/retried_immediate  connector.<id>/retried_delayed  connector.<id>/replayed

``retried_delayed`` counts events handed to the delayed retry (waiting in the retry
location); ``replayed`` counts dead letters sent back by the ``replay`` command;
``retry_due`` and ``retry_waiting`` count events the ``retry`` command found due (and
redelivered) or not yet due (left waiting).
"""

from __future__ import annotations

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
RETRY_DUE = "retry_due"
RETRY_WAITING = "retry_waiting"

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
)
"""Every counter each connector reports, in summary order."""


def connector_namespace(connector_id: str) -> str:
    """The metrics namespace of one connector."""
    return f"connector.{connector_id}"
