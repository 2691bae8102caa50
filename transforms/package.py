"""Package stage: reshape each filtered event into the destination's record.

Wraps :mod:`transforms.rules.package` for Beam. An event that a template cannot package,
or whose record cannot be serialized as JSON, becomes a dead letter (``stage: package``)
with the error, never a crash: reason ``package_cast_failed`` when a field's ``cast``
refused its value (``PackageCastError``), else ``package_failed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from transforms.config import DeliveryConfig
from transforms.live import LiveRules, as_rules
from transforms.parse import DEAD_LETTER
from transforms.rules.encode import dumps, line_json
from transforms.rules.events import event_time_ms
from transforms.rules.package import PackageError
from transforms.rules.records import Chunk, DeadLetter, Packaged, is_last, raw_of, rules_of


class _PackageChunk(beam.DoFn):
    def __init__(self, rules: LiveRules):
        self.rules = rules

    def process(
        self, element: tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]
    ) -> Iterator[Any]:
        cid, pairs = element
        # The rules Route used for this slice (see Chunk.rules), not whatever is live now.
        connector = rules_of(pairs) or self.rules.by_id()[cid]
        apply = connector.packager.apply
        # Serialized here, while the record is still cached (see Packaged.data).
        serialize = dumps if connector.record_json else None
        out = Chunk(last=is_last(pairs))
        failed: list[DeadLetter] = []
        raw = raw_of(pairs)
        # Events passed on unchanged are sent as their input lines (encode.line_json).
        lines = raw if raw is not None and connector.sends_lines else None
        make = tuple.__new__  # Packaged(...) without its generated __new__'s Python frame
        for n, (event, filtered) in enumerate(pairs):
            try:
                line = lines[n] if lines is not None else None
                data = line_json(line) if line is not None else None
                if data is not None:
                    record = filtered
                else:
                    record = apply(filtered)
                    data = serialize(record) if serialize is not None else None
            except Exception as exc:  # a template must never crash the pipeline
                # A typed failure (a refused cast) names its own reason; anything else is
                # the template's or the encoder's, package_failed.
                reason = exc.reason if isinstance(exc, PackageError) else "package_failed"
                failed.append(
                    DeadLetter.for_event(
                        "package", cid, event, reason, f"{type(exc).__name__}: {exc}"
                    )
                )
                continue
            body = event["event"]
            stamp = body.get("timestamp")
            out.append(
                make(
                    Packaged,
                    (
                        event["event_id"],
                        stamp if type(stamp) is int else event_time_ms(event),
                        body["type"],
                        None if data is not None else record,  # keep the bytes only
                        # The line rather than the parsed event, when there is one (see
                        # Packaged.event): the event's objects are freed with this slice.
                        (raw[n] or event) if raw is not None else event,
                        data,
                    ),
                )
            )
        if out or out.last:  # a chunk's end goes on, even empty (see Chunk.last)
            yield cid, out
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)


class PackageRecords(beam.PTransform):
    """``(connector_id, [(original, filtered)])`` -> ``(connector_id, [Packaged])``.

    Tagged output ``dead_letter``: lists of :class:`DeadLetter` (``stage: package``).
    """

    def __init__(self, config: DeliveryConfig | LiveRules):
        super().__init__()
        self.rules = as_rules(config)

    def expand(self, filtered: Any) -> Any:
        typed = beam.ParDo(_PackageChunk(self.rules)).with_output_types(
            beam.typehints.Tuple[str, Chunk]
        )
        return filtered | typed.with_outputs(DEAD_LETTER, main="records")
