r"""The ``retry`` and ``replay`` commands: second chances for failed events.

``retry`` (batch mode) processes the retry location once::

    python -m beam_pipeline retry --config delivery.yaml

For each stored retry record (a batch that failed after its immediate retries): if it is
due (``not_before`` has passed) it is redelivered once, with the *packaged* records it
stored, so the bytes, object names and ``_id``s are exactly those of the first attempt.
Then: delivered -> the record is removed; failed but retryable with schedule left -> the
record is rewritten in place with the next ``not_before``; otherwise -> dead letters
(``reason: retries_exhausted`` or ``not_retryable``), then the record is removed. Records
not yet due are left untouched. Run it on a schedule (cron, Cloud Scheduler, Airflow)
more often than the shortest delay, e.g. every 5 minutes.

``replay`` sends dead letters back through delivery for their connector::

    python -m beam_pipeline replay --config delivery.yaml --dead-letters ./out/dead_letter \
        [--connector ID] [--since 2026-11-26T00:00:00Z]

It takes the *original event* of each dead letter and repackages it with the connector's
current filter and package rules (so a fixed template applies), skipping routing (the
event was routed there already). A replayed event that fails again becomes an ordinary
dead letter of that event, never a dead letter of a dead letter. Dead letters of invalid
input (``stage: parse``) have no event to replay; they are counted and skipped.
Events are replayed in ``event_id`` order per connector, so replaying the same dead
letters twice produces the same batches and object names (idempotent on object stores).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipeline.config import DeliveryConfig, compile_connectors
from transforms import metrics
from transforms.connectors import make_sink
from transforms.connectors.base import DeliveryBatch, Sink
from transforms.connectors.file import join_path, write_bytes
from transforms.deliver import RETRY, CutBatches, Deliver
from transforms.filter import FilterFields
from transforms.package import PackageRecords
from transforms.parse import DEAD_LETTER, DEFAULT_CHUNK_LINES
from transforms.retry import (
    WriteDeadLetters,
    WriteRetries,
    count_dead_letters,
    dead_letter_name,
    write_retry_record,
)
from transforms.rules.encode import encode_ndjson
from transforms.rules.events import to_epoch_ms
from transforms.rules.records import RetryRecord
from transforms.rules.retry import RetryPolicy, deliver_with_retries, settle_failures


def read_json(path: str) -> Any:
    """Read a whole JSON file from any Beam filesystem."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return orjson.loads(fh.read())


class _Redeliver(beam.DoFn):
    """Redeliver one due retry record and settle it, all before returning.

    The dead letters and the rewritten record are written *before* the record is removed,
    so a crash in between can only repeat work (idempotent names), never lose an event.
    """

    def __init__(self, config: DeliveryConfig, now_ms: int | None):
        self.config = config
        self.now_ms = now_ms

    def setup(self) -> None:
        self.sinks: dict[str, Sink] = {}
        for c in compile_connectors(self.config):
            self.sinks[c.id] = make_sink(c.id, c.type, c.deliver)
            self.sinks[c.id].open()
        self.policy = RetryPolicy(immediate=0)

    def process(self, path: str) -> Iterator[str]:
        record = RetryRecord.from_json_dict(read_json(path))
        ns = metrics.connector_namespace(record.connector)
        now_ms = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        if record.connector not in self.sinks:
            raise ValueError(
                f"{path}: connector {record.connector!r} is not in the config any more; "
                "add it back (or move the record away) to settle these events"
            )
        if record.not_before_ms > now_ms:
            Metrics.counter(ns, metrics.RETRY_WAITING).inc(len(record.items))
            return
        Metrics.counter(ns, metrics.RETRY_DUE).inc(len(record.items))
        batch = DeliveryBatch(record.connector, record.prefix, record.items, retry=record)
        outcome = deliver_with_retries(self.sinks[record.connector], batch, self.policy)
        Metrics.counter(ns, metrics.DELIVERED).inc(outcome.delivered)
        Metrics.counter(ns, metrics.WRITES).inc(outcome.writes)
        Metrics.counter(ns, metrics.BYTES).inc(outcome.bytes)
        schedule = self.config.connector(record.connector).retry.delayed_schedule_s
        again, letters = settle_failures(batch, outcome, schedule, True, now_ms)
        if letters:
            target = join_path(self.config.dead_letter.location, dead_letter_name(letters))
            write_bytes(target, encode_ndjson([d.to_json_dict() for d in letters]))
            count_dead_letters(letters)
        if again is not None:
            write_retry_record(self._location, again)
            Metrics.counter(ns, metrics.RETRIED_DELAYED).inc(len(again.items))
        else:
            FileSystems.delete([path])
        yield path

    @property
    def _location(self) -> str:
        assert self.config.retry_topic is not None
        return self.config.retry_topic

    def teardown(self) -> None:
        for sink in getattr(self, "sinks", {}).values():
            sink.close()


def retry_patterns(location: str) -> list[str]:
    """Where retry records live: ``<location>/<connector>/*.json``."""
    return [join_path(location, "*/*.json")]


def build_retry(p: beam.Pipeline, config: DeliveryConfig, now_ms: int | None = None) -> Any:
    """The ``retry`` job: redeliver due records from the retry location once."""
    if config.retry_topic is None:
        raise ValueError("the config has no retry_topic: there is nothing to retry")
    return (
        p
        | "Patterns" >> beam.Create(retry_patterns(config.retry_topic))
        | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
        | "Paths" >> beam.Map(lambda m: m.path)
        | "Spread" >> beam.Reshuffle()
        | "Redeliver" >> beam.ParDo(_Redeliver(config, now_ms))
    )


def dead_letter_patterns(path: str) -> list[str]:
    """Dead-letter files below a directory (our layout), or the path itself if a glob/file."""
    if any(ch in path for ch in "*?[") or path.endswith(".ndjson"):
        return [path]
    return [join_path(path, "*.ndjson"), join_path(path, "*/*.ndjson")]


class _ReadReplayable(beam.DoFn):
    def __init__(self, connectors: Iterable[str], only: str | None, since_ms: int | None):
        self.connectors = set(connectors)
        self.only = only
        self.since_ms = since_ms

    def setup(self) -> None:
        self.skipped = Metrics.counter(metrics.PIPELINE, "replay_skipped")

    def process(self, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            data = fh.read()
        for line in data.splitlines():
            if not line.strip():
                continue
            letter = orjson.loads(line)
            cid = letter.get("connector")
            event = letter.get("event")
            if self.only is not None and cid != self.only:
                continue
            if self.since_ms is not None:
                failed = to_epoch_ms(letter.get("failed_at"))
                if failed is None or failed < self.since_ms:
                    continue
            if not isinstance(event, dict) or cid not in self.connectors:
                self.skipped.inc()
                continue
            Metrics.counter(metrics.connector_namespace(cid), metrics.REPLAYED).inc()
            yield cid, event


def _chunks(element: tuple[str, Iterable[dict[str, Any]]], size: int) -> Iterator[Any]:
    cid, events = element
    ordered = sorted(events, key=lambda e: e["event_id"])
    for start in range(0, len(ordered), size):
        yield cid, ordered[start : start + size]


def build_replay(
    p: beam.Pipeline,
    config: DeliveryConfig,
    dead_letters: str,
    connector: str | None = None,
    since_ms: int | None = None,
) -> dict[str, Any]:
    """The ``replay`` job: dead letters -> Filter -> Package -> Batch -> Deliver."""
    ids = [c.id for c in config.connectors]
    events = (
        p
        | "Patterns" >> beam.Create(dead_letter_patterns(dead_letters))
        | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
        | "Paths" >> beam.Map(lambda m: m.path)
        | "ReadDeadLetters" >> beam.ParDo(_ReadReplayable(ids, connector, since_ms))
        | "ByConnector" >> beam.GroupByKey()
        | "Chunks" >> beam.FlatMap(_chunks, DEFAULT_CHUNK_LINES)
    )
    filtered = events | "Filter" >> FilterFields(config)
    packaged = filtered | "Package" >> PackageRecords(config)
    batches = packaged.records | "Batch" >> CutBatches(config)
    delivered = batches.batches | "Deliver" >> Deliver(config)
    failures = (
        packaged[DEAD_LETTER],
        batches[DEAD_LETTER],
        delivered[DEAD_LETTER],
    ) | "CollectFailures" >> beam.Flatten()
    out = {"written": delivered.written}
    out["dead_letters"] = failures | "DeadLetters" >> WriteDeadLetters(config.dead_letter.location)
    if config.retry_topic is not None:
        out["retries"] = delivered[RETRY] | "DelayedRetries" >> WriteRetries(config.retry_topic)
    return out
