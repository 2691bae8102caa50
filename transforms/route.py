"""Route stage: send each chunk's events to every connector whose rule matches.

The rules themselves are plain Python (:mod:`transforms.rules.route`); this module only
wraps them for Beam. Events that match no connector are counted (``telemetry/unmatched``),
never silently lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipeline.config import DeliveryConfig, compile_connectors
from transforms import metrics


class _RouteChunk(beam.DoFn):
    def __init__(self, config: DeliveryConfig):
        self.config = config

    def setup(self) -> None:
        self.rules = [(c.id, c.route) for c in compile_connectors(self.config)]
        self.routed = {
            cid: Metrics.counter(metrics.connector_namespace(cid), metrics.ROUTED)
            for cid, _ in self.rules
        }
        self.unmatched = Metrics.counter(metrics.PIPELINE, metrics.UNMATCHED)

    def process(self, events: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        matched_any = [False] * len(events)
        for cid, rule in self.rules:
            mine = []
            for i, event in enumerate(events):
                if rule.matches(event):
                    mine.append(event)
                    matched_any[i] = True
            if mine:
                self.routed[cid].inc(len(mine))
                yield cid, mine
        self.unmatched.inc(matched_any.count(False))


class RouteEvents(beam.PTransform):
    """Chunks of events -> ``(connector_id, [event, ...])``, one element per matching connector.

    Events are shared between connectors by reference; later stages never modify them.
    """

    def __init__(self, config: DeliveryConfig):
        super().__init__()
        self.config = config

    def expand(self, chunks: Any) -> Any:
        return chunks | beam.ParDo(_RouteChunk(self.config))
