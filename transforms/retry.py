"""Dead letters: every stage's failures, flattened into one writer.

Each element is a list of :class:`~transforms.rules.records.DeadLetter` from one chunk or
one batch (so all share a stage and a connector). Each list becomes one NDJSON file below
the dead-letter location, named from its content so a rerun rewrites rather than
duplicates::

    <dead_letter.path>/<stage>/<connector or "input">-<digest>.ndjson

A dead letter that cannot be written fails the job loudly: losing it silently would
break the "nothing lost" promise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.connectors.file import join_path, write_bytes
from transforms.rules.encode import encode_ndjson
from transforms.rules.naming import batch_digest
from transforms.rules.records import DeadLetter


def dead_letter_name(letters: list[DeadLetter]) -> str:
    """The content-derived file name of a list of dead letters."""
    first = letters[0]
    keys = (d.event_id or str(d.original.get("original", "")) + d.reason for d in letters)
    return f"{first.stage}/{first.connector or 'input'}-{batch_digest(keys)}.ndjson"


class _WriteDeadLetters(beam.DoFn):
    def __init__(self, path: str):
        self.path = path

    def process(self, letters: list[DeadLetter]) -> Iterator[str]:
        if not letters:
            return
        target = join_path(self.path, dead_letter_name(letters))
        write_bytes(target, encode_ndjson([d.to_json_dict() for d in letters]))
        connector = letters[0].connector
        if connector is not None:
            Metrics.counter(metrics.connector_namespace(connector), metrics.DEAD_LETTERED).inc(
                len(letters)
            )
        yield target


class WriteDeadLetters(beam.PTransform):
    """Write lists of dead letters as NDJSON files below ``path`` (local, gs://, s3://)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, letters: Any) -> Any:
        return letters | beam.ParDo(_WriteDeadLetters(self.path))
