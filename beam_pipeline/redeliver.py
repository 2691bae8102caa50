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

Each record is settled on its own: one bad record never holds up the others.

- A file that is not a usable record (not JSON, not an object, fields missing or of the
  wrong type) becomes one dead letter (``stage: retry``, ``reason:
  invalid_retry_record``) keeping the file's bytes as ``original``; the file is removed.
- A record whose connector is no longer in the config becomes one dead letter per event
  (``reason: connector_removed``, the event kept): add the connector back and ``replay``
  them. The file is removed.
- A sink that raises something other than a delivery error (a bug, a bad stored prefix)
  fails that record's events as ``not_retryable`` dead letters, as in the main job.
- A file that cannot be read at all (a storage error) is left in place for the next run
  and logged.

These dead letters have no row in the summary; they are listed by reason with the input's
(``invalid_retry_record``, ``connector_removed``), and the run's counts still add up.

A retry location must be a directory, ``gs://`` or ``s3://``: with a Pub/Sub
``retry_location`` (``projects/P/topics/T``) the streaming job retries by itself, and
:func:`build_retry` refuses.

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
What still fails but may be retried goes to the ``retry_location``: files in the retry
location, or with a Pub/Sub topic, messages published to it (for the streaming job).

Neither command writes a configured secret into a dead letter or retry record
(:func:`transforms.connectors.secrets.config_secrets`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipeline.runners import shares_local_disk
from transforms import metrics
from transforms.batch import CutBatches
from transforms.config import DeliveryConfig, compile_connectors
from transforms.connectors import make_sink
from transforms.connectors._policy import redact
from transforms.connectors.base import DeliveryBatch, DeliveryError, Sink
from transforms.connectors.file import join_path, write_bytes
from transforms.connectors.secrets import ConfigSecrets, config_secrets
from transforms.dead_letters import WriteDeadLetters, count_dead_letters
from transforms.deliver import RETRY, Deliver
from transforms.filter import FilterFields
from transforms.package import PackageRecords
from transforms.parse import DEAD_LETTER, DEFAULT_CHUNK_LINES
from transforms.retry import PublishRetries, WriteRetries
from transforms.rules.events import to_epoch_ms
from transforms.rules.letters import (
    dead_letter_name,
    encode_dead_letters,
    encode_retry_record,
    read_retry_message,
)
from transforms.rules.records import DeadLetter
from transforms.rules.retry import Outcome, RetryPolicy, deliver_with_retries, settle_failures

LOG = logging.getLogger(__name__)


def read_bytes(path: str) -> bytes:
    """Read a whole file from any Beam filesystem."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        data: bytes = fh.read()
    return data


class _Redeliver(beam.DoFn):
    """Redeliver one due retry record and settle it, all before returning.

    The dead letters and the rewritten record are written *before* the record is removed,
    so a crash in between can only repeat work (idempotent names), never lose an event.
    A record that cannot be used, or whose connector is gone, is settled as dead letters
    (see the module doc) without holding up the others.
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
        self.secrets = config_secrets(self.config)

    def process(self, path: str) -> Iterator[str]:
        yield from self._settle(path)

    def _settle(self, path: str) -> list[str]:
        """Settle the record at ``path``; the path when it is settled, else nothing."""
        try:
            data = read_bytes(path)
        except Exception as exc:  # Beam's filesystems raise their own errors
            # A failed read says nothing about the record: leave it for the next run.
            LOG.warning("cannot read retry record %s (left for the next run): %s", path, exc)
            return []
        read = read_retry_message(data, self.sinks, self.secrets, where=path)
        if not isinstance(read, list):
            return self._redeliver(path, read)
        # No summary row can show them (a removed connector has none): listed by reason.
        self._write_letters(read, metrics.PIPELINE)
        FileSystems.delete([path])
        return [path]

    def _redeliver(self, path: str, record: Any) -> list[str]:
        ns = metrics.connector_namespace(record.connector)
        now_ms = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        if record.not_before_ms > now_ms:
            Metrics.counter(ns, metrics.RETRY_WAITING).inc(len(record.items))
            return []
        Metrics.counter(ns, metrics.RETRY_DUE).inc(len(record.items))
        batch = DeliveryBatch(record.connector, record.prefix, record.items, retry=record)
        try:
            outcome = deliver_with_retries(self.sinks[record.connector], batch, self.policy)
        except Exception as exc:  # a sink bug, not a delivery error: still never drop events
            error = DeliveryError(redact(f"{type(exc).__name__}: {exc}", self.secrets), False)
            outcome = Outcome(failed=[(i, error, 1) for i in batch.items])
        Metrics.counter(ns, metrics.DELIVERED).inc(outcome.delivered)
        Metrics.counter(ns, metrics.WRITES).inc(outcome.writes)
        Metrics.counter(ns, metrics.BYTES).inc(outcome.bytes)
        schedule = self.config.connector(record.connector).retry.delayed_schedule_s
        again, letters = settle_failures(batch, outcome, schedule, True, now_ms)
        if letters:
            self._write_letters(letters)
        if again is not None:
            # In place: the file's own path, whatever name the record claims.
            write_bytes(path, encode_retry_record(again, self.secrets))
            Metrics.counter(ns, metrics.RETRIED_DELAYED).inc(len(again.items))
        else:
            FileSystems.delete([path])
        return [path]

    def _write_letters(self, letters: list[DeadLetter], namespace: str | None = None) -> None:
        target = join_path(self.config.dead_letter.location, dead_letter_name(letters))
        write_bytes(target, encode_dead_letters(letters, self.secrets))
        count_dead_letters(letters, namespace)

    def teardown(self) -> None:
        for sink in getattr(self, "sinks", {}).values():
            sink.close()


def retry_patterns(location: str) -> list[str]:
    """Where retry records live: ``<location>/<connector>/*.json``."""
    return [join_path(location, "*/*.json")]


def build_retry(p: beam.Pipeline, config: DeliveryConfig, now_ms: int | None = None) -> Any:
    """The ``retry`` job: redeliver due records from the retry location once.

    Raises:
        ValueError: without a ``retry_location``, or with a Pub/Sub one (the streaming job
            retries those by itself; a path named ``projects/...`` would read nothing).
    """
    if config.retry_location is None:
        raise ValueError("the config has no retry_location: there is nothing to retry")
    if config.retry_on_pubsub:
        raise ValueError(
            "retry_location is a Pub/Sub topic, which the streaming job retries by itself; "
            "the retry command needs a directory, gs:// or s3:// location"
        )
    return (
        p
        | "Patterns" >> beam.Create(retry_patterns(config.retry_location))
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
            try:
                letter = orjson.loads(line)
            except orjson.JSONDecodeError:
                letter = None
            if not isinstance(letter, dict):  # not a dead letter: counted, never a crash
                self.skipped.inc()
                continue
            cid = letter.get("connector")
            event = letter.get("event")
            if self.only is not None and cid != self.only:
                continue
            if self.since_ms is not None:
                failed = to_epoch_ms(letter.get("failed_at"))
                if failed is None or failed < self.since_ms:
                    continue
            if (
                not isinstance(event, dict)
                or not isinstance(event.get("event_id"), str)
                or not isinstance(cid, str)
                or cid not in self.connectors
            ):
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
    """The ``replay`` job: dead letters -> Filter -> Package -> Batch -> Deliver.

    What fails again goes to dead letters, or, retryable, to the ``retry_location``: files,
    or messages published to it when it is a Pub/Sub topic.
    """
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
    batches = packaged.records | "Batch" >> CutBatches(config, shared_disk=shares_local_disk(p))
    delivered = batches.batches | "Deliver" >> Deliver(config)
    failures = (
        packaged[DEAD_LETTER],
        batches[DEAD_LETTER],
        delivered[DEAD_LETTER],
    ) | "CollectFailures" >> beam.Flatten()
    secrets = ConfigSecrets(config)  # values read on the workers, never in the graph
    out = {"written": delivered.written}
    out["dead_letters"] = failures | "DeadLetters" >> WriteDeadLetters(
        config.dead_letter.location, secrets=secrets
    )
    if config.retry_on_pubsub:
        assert config.retry_location is not None
        # The streaming job reads them back from retry_subscription and holds them.
        out["retries"] = delivered[RETRY] | "DelayedRetries" >> PublishRetries(
            config.retry_location, secrets
        )
    elif config.retry_location is not None:
        out["retries"] = delivered[RETRY] | "DelayedRetries" >> WriteRetries(
            config.retry_location, secrets
        )
    return out
