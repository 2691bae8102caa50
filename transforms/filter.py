"""Filter stage: each connector keeps only the data points it may see.

Wraps :mod:`transforms.rules.filter` for Beam. A field not allowed never leaves this stage
for that connector; the original event travels alongside only for dead letters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from transforms.config import DeliveryConfig
from transforms.live import LiveRules, as_rules
from transforms.rules.records import Chunk, raw_of, rules_of


class _FilterChunk(beam.DoFn):
    def __init__(self, rules: LiveRules):
        self.rules = rules

    def process(
        self, element: tuple[str, list[dict[str, Any]]]
    ) -> Iterator[tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]]:
        cid, events = element
        # The rules Route used for this slice (see Chunk.rules), not whatever is live now.
        connector = rules_of(events) or self.rules.by_id()[cid]
        apply = connector.filter.apply
        yield (
            cid,
            Chunk([(e, apply(e)) for e in events], raw_of(events), connector),
        )


class FilterFields(beam.PTransform):
    """``(connector_id, [event])`` -> ``(connector_id, [(original, filtered)])``."""

    def __init__(self, config: DeliveryConfig | LiveRules):
        super().__init__()
        self.rules = as_rules(config)

    def expand(self, routed: Any) -> Any:
        return routed | beam.ParDo(_FilterChunk(self.rules)).with_output_types(
            beam.typehints.Tuple[str, Chunk]
        )
