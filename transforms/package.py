"""Package stage: reshape each filtered event into the destination's record.

Wraps :mod:`transforms.rules.package` for Beam. An event that a template cannot package,
or whose record cannot be serialized as JSON, becomes a dead letter (``stage: package``)
with the error, never a crash: reason ``package_cast_failed`` when a field's ``cast``
refused its value (``PackageCastError``), else ``package_failed``.

A connector with ``package.function`` (the escape hatch, see
:mod:`transforms.rules.package`) takes its own loop, so the others run exactly the code
they ran before it existed. There one event may become several records or none:

* a dict is one record, named by the event's ``event_id``;
* a list of k dicts is k records named ``<event_id>#0`` .. ``<event_id>#<k-1>``: distinct
  (siblings in one batch, or in two batches of the same size, would otherwise get the same
  object name, and the second write would find the first "already present"; an
  Elasticsearch ``_id`` would be overwritten) and stable (a rerun writes the same names).
  Each record keeps the original event for its dead letters. ``fanned_out`` counts the
  k - 1 extra records;
* None (or ``[]``) is no record: ``dropped`` counts the event.

So per connector ``routed + fanned_out = delivered + retrying + dead-lettered + dropped``
(see :mod:`beam_pipeline.summary`). A function that raises or returns anything else is a
``package_function_failed`` dead letter of that event, its message redacted with the
connector's secrets (:func:`transforms.rules.package.function_error_text`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.config import CompiledConnector, DeliveryConfig
from transforms.connectors.secrets import config_secrets
from transforms.live import LiveRules, as_rules
from transforms.parse import DEAD_LETTER
from transforms.rules.encode import dumps, line_json
from transforms.rules.events import event_time_ms
from transforms.rules.package import PackageError, PackageFunctionError, function_error_text
from transforms.rules.records import Chunk, DeadLetter, Packaged, raw_of, rules_of


class _PackageChunk(beam.DoFn):
    def __init__(self, rules: LiveRules):
        self.rules = rules
        self._secrets: dict[int, tuple[Any, tuple[str, ...]]] = {}

    def process(
        self, element: tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]
    ) -> Iterator[Any]:
        cid, pairs = element
        # The rules Route used for this slice (see Chunk.rules), not whatever is live now.
        connector = rules_of(pairs) or self.rules.by_id()[cid]
        if connector.packager.function is not None:
            yield from self._with_function(cid, connector, pairs)
            return
        apply = connector.packager.apply
        # Serialized here, while the record is still cached (see Packaged.data).
        serialize = dumps if connector.record_json else None
        out = Chunk()
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
        if out:
            yield cid, out
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)

    def _with_function(
        self,
        cid: str,
        connector: CompiledConnector,
        pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> Iterator[Any]:
        """The loop of a connector with ``package.function`` (see the module doc)."""
        outputs = connector.packager.outputs
        keep_record = not connector.record_json
        out = Chunk()
        failed: list[DeadLetter] = []
        raw = raw_of(pairs)
        dropped = fanned_out = 0
        for n, (event, filtered) in enumerate(pairs):
            try:
                records = outputs(filtered)
                try:
                    # Always serialized here: a record JSON cannot carry is this event's
                    # dead letter, not a failed write of a whole batch later.
                    datas = [dumps(r) for r in records]
                except Exception as exc:
                    raise PackageFunctionError(
                        f"package.function {connector.packager.function} returned a record "
                        f"that cannot be written as JSON: {type(exc).__name__}: {exc}"
                    ) from None
            except Exception as exc:  # user code and templates never crash the pipeline
                reason = exc.reason if isinstance(exc, PackageError) else "package_failed"
                text = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, PackageFunctionError):
                    text = function_error_text(text, self._secret_values(connector))
                failed.append(DeadLetter.for_event("package", cid, event, reason, text))
                continue
            if not records:
                dropped += 1
                continue
            fanned_out += len(records) - 1
            body = event["event"]
            stamp = body.get("timestamp")
            time_ms = stamp if type(stamp) is int else event_time_ms(event)
            original = (raw[n] or event) if raw is not None else event
            event_id = event["event_id"]
            many = len(records) > 1
            for k, (record, data) in enumerate(zip(records, datas, strict=True)):
                out.append(
                    Packaged(
                        f"{event_id}#{k}" if many else event_id,
                        time_ms,
                        body["type"],
                        record if keep_record else None,
                        original,
                        None if keep_record else data,
                    )
                )
        ns = metrics.connector_namespace(cid)
        if dropped:
            Metrics.counter(ns, metrics.DROPPED).inc(dropped)
        if fanned_out:
            Metrics.counter(ns, metrics.FANNED_OUT).inc(fanned_out)
        if out:
            yield cid, out
        if failed:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, failed)

    def _secret_values(self, connector: CompiledConnector) -> tuple[str, ...]:
        """The connector's secret values, read once per connector config (on a failure only)."""
        source = connector.source
        cached = self._secrets.get(id(source))
        if cached is None or cached[0] is not source:
            values = config_secrets(source) if source is not None else ()
            cached = self._secrets[id(source)] = (source, values)
        return cached[1]


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
