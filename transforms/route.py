"""Route stage: send each chunk's events to every connector whose rule matches.

The rules themselves are plain Python (:mod:`transforms.rules.route`); this module only
wraps them for Beam. A catch-all connector (``route.unmatched: true``) receives the events
no other connector took (:func:`~transforms.rules.route.route_events`). Events that no
connector takes, catch-alls included, are counted (``telemetry/unmatched``), never
silently lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.config import DeliveryConfig
from transforms.live import LiveRules, as_rules
from transforms.rules.records import Chunk, raw_of
from transforms.rules.route import route_events


class _RouteChunk(beam.DoFn):
    def __init__(self, rules: LiveRules):
        self.rules = rules

    def setup(self) -> None:
        self.routed = {
            c.id: Metrics.counter(metrics.connector_namespace(c.id), metrics.ROUTED)
            for c in self.rules.connectors()
        }
        self.unmatched = Metrics.counter(metrics.PIPELINE, metrics.UNMATCHED)

    def process(self, events: Chunk) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        raw = raw_of(events)
        kinds = [event["event"]["type"] for event in events]  # Parse checked it is there
        # One snapshot of the rules for the whole slice; each connector's chunk carries
        # its compiled connector on to Filter and Package (see Chunk.rules). Catch-alls
        # (route.unmatched) are decided against the same snapshot.
        connectors = self.rules.connectors()
        per_connector, unmatched = route_events([c.route for c in connectors], events, kinds)
        for c, hits in zip(connectors, per_connector, strict=True):
            # The events' raw lines go along (see Chunk.raw).
            lines = None if raw is None else [raw[i] for i in hits]
            if hits:
                self.routed[c.id].inc(len(hits))
                yield c.id, Chunk([events[i] for i in hits], lines, c)
        self.unmatched.inc(unmatched)


class RouteEvents(beam.PTransform):
    """Chunks of events -> ``(connector_id, [event, ...])``, one element per matching connector.

    Events are shared between connectors by reference; later stages never modify them.
    """

    def __init__(self, config: DeliveryConfig | LiveRules):
        super().__init__()
        self.rules = as_rules(config)

    def expand(self, chunks: Any) -> Any:
        return chunks | beam.ParDo(_RouteChunk(self.rules)).with_output_types(
            beam.typehints.Tuple[str, Chunk]
        )
