"""Retry and dead letters: where failed events wait, and where they end.

Delayed retries: :class:`WriteRetries` stores each batch that still failed after the
immediate retries as a retry record; the ``retry`` command (:mod:`beam_pipeline.redeliver`)
later redelivers what is due.

Dead letters: every stage's failures, flattened into one writer.

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
import orjson
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer

from transforms import metrics
from transforms.connectors.base import DeliveryBatch
from transforms.connectors.file import join_path, write_bytes
from transforms.pubsub_read import PubSubReading
from transforms.rules.encode import encode_ndjson
from transforms.rules.naming import batch_digest
from transforms.rules.records import Chunk, DeadLetter, RetryRecord


def dead_letter_name(letters: list[DeadLetter]) -> str:
    """The content-derived file name of a list of dead letters."""
    first = letters[0]
    keys = (d.event_id or str(d.original.get("original", "")) + d.reason for d in letters)
    return f"{first.stage}/{first.connector or 'input'}-{batch_digest(keys)}.ndjson"


def count_dead_letters(letters: list[DeadLetter]) -> None:
    """Count dead letters per connector (``dead_lettered``) and per reason.

    Input dead letters (no connector) are counted by reason under ``telemetry``; their
    total is the ``invalid`` counter of the Parse stage.
    """
    by_reason: dict[tuple[str | None, str], int] = {}
    for d in letters:
        by_reason[(d.connector, d.reason)] = by_reason.get((d.connector, d.reason), 0) + 1
    for (connector, reason), n in by_reason.items():
        ns = metrics.connector_namespace(connector) if connector else metrics.PIPELINE
        if connector:
            Metrics.counter(ns, metrics.DEAD_LETTERED).inc(n)
        Metrics.counter(ns, metrics.dead_letter_reason_counter(reason)).inc(n)


class _WriteDeadLetters(beam.DoFn):
    def __init__(self, path: str):
        self.path = path

    def process(self, letters: list[DeadLetter]) -> Iterator[str]:
        if not letters:
            return
        target = join_path(self.path, dead_letter_name(letters))
        write_bytes(target, encode_ndjson([d.to_json_dict() for d in letters]))
        count_dead_letters(letters)
        yield target


def _explode(letters: list[DeadLetter]) -> Iterator[tuple[tuple[str, str], DeadLetter]]:
    for letter in letters:
        yield (letter.stage, letter.connector or ""), letter


class WriteDeadLetters(beam.PTransform):
    """Write lists of dead letters as NDJSON files below ``path`` (local, gs://, s3://).

    In batch each list (one chunk's or one batch's failures) is one file. In streaming,
    where lists are small, dead letters are first bulked by stage and connector with
    ``GroupIntoBatches`` (``dead_letter.batch``: by default up to 1,000 per file, waiting at
    most 30 s).
    """

    def __init__(
        self,
        path: str,
        streaming: bool = False,
        clock: Any = None,
        max_events: int = 1000,
        max_wait_s: float = 30.0,
    ):
        super().__init__()
        self.path = path
        self.streaming = streaming
        self.clock = clock
        self.max_events = max_events
        self.max_wait_s = max_wait_s

    def expand(self, letters: Any) -> Any:
        if self.streaming:
            extra = {"clock": self.clock} if self.clock is not None else {}
            letters = (
                letters
                | "Explode" >> beam.FlatMap(_explode)
                | "Typed"
                >> beam.Map(lambda kv: kv).with_output_types(
                    beam.typehints.Tuple[beam.typehints.Tuple[str, str], Any]
                )
                | "Bulk" >> beam.GroupIntoBatches(self.max_events, self.max_wait_s, **extra)
                | "Lists" >> beam.Map(lambda kv: list(kv[1]))
            )
        return letters | "Write" >> beam.ParDo(_WriteDeadLetters(self.path))


def write_retry_record(location: str, record: RetryRecord) -> str:
    """Store (or overwrite) a retry record under its stable name; return its path."""
    target = join_path(location, record.name)
    write_bytes(target, orjson.dumps(record.to_json_dict()))
    return target


class _WriteRetries(beam.DoFn):
    def __init__(self, location: str):
        self.location = location

    def process(self, record: RetryRecord) -> Iterator[str]:
        yield write_retry_record(self.location, record)


class WriteRetries(beam.PTransform):
    """Store batches waiting for a delayed retry in the retry location (dir, gs://, s3://).

    One JSON file per batch, ``<retry_topic>/<connector>/<digest>.json``, holding a
    :class:`~transforms.rules.records.RetryRecord`. The ``retry`` command redelivers what
    is due and rewrites or removes each file.
    """

    def __init__(self, location: str):
        super().__init__()
        self.location = location

    def expand(self, records: Any) -> Any:
        return records | beam.ParDo(_WriteRetries(self.location))


def _encode_record(record: RetryRecord) -> bytes:
    return orjson.dumps(record.to_json_dict())


class PublishRetries(beam.PTransform):
    """Streaming: publish retry records to the Pub/Sub retry topic (one message per batch)."""

    def __init__(self, topic: str):
        super().__init__()
        self.topic = topic

    def expand(self, records: Any) -> Any:
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (
            records
            | "Encode" >> beam.Map(_encode_record).with_output_types(bytes)
            | "Publish" >> WriteToPubSub(self.topic)
        )


_RECORDS = BagStateSpec("records", PickleCoder())
_DUE = TimerSpec("due", TimeDomain.REAL_TIME)
_END = TimerSpec("end_of_input", TimeDomain.WATERMARK)
_RECORDS_STATE = beam.DoFn.StateParam(_RECORDS)
_DUE_TIMER = beam.DoFn.TimerParam(_DUE)
_END_TIMER = beam.DoFn.TimerParam(_END)
_FIRED = beam.DoFn.TimestampParam
REQUEUE = "requeue"
"""Tag of retry records given back to the retry topic, unchanged, when the input ends."""


class _HoldUntilDue(beam.DoFn):
    """Keeps each retry record in state until its ``not_before``, then releases it.

    Bag state and a processing-time timer per record name, so a waiting record survives
    worker restarts on runners with durable state (Dataflow, Flink). The timer fires at
    the earliest ``not_before`` held; a time already past fires at once.

    When the input ends (the watermark passes the end of the window: a drained job, a
    bounded test), records still waiting are emitted unchanged under ``requeue``, for the
    retry topic, and their timer is cleared: a waiting record is never dropped, and a
    pending processing-time timer does not keep a finished Flink job running (Flink waits
    for it forever, see docs/flink.md).
    """

    def process(
        self,
        element: tuple[str, bytes],
        records: Any = _RECORDS_STATE,
        due: Any = _DUE_TIMER,
        end: Any = _END_TIMER,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterator[Any]:
        # No early ``return`` in this generator: Beam warns about any (apache/beam#22969).
        _, data = element
        if data.strip():  # blank: a keep-alive message (see docs/beam-limits.md)
            try:
                record = RetryRecord.from_json_dict(orjson.loads(data))
            except (ValueError, KeyError, TypeError) as exc:
                letter = DeadLetter.for_input(
                    "bad_retry_record", f"unreadable retry record: {exc}", data
                )
                letter.stage = "retry"
                yield beam.pvalue.TaggedOutput("invalid", [letter])
            else:
                records.add(record)
                due.set(min(r.not_before_ms for r in records.read()) / 1000)
                end.set(window.end)

    @on_timer(_DUE)
    def release(
        self,
        records: Any = _RECORDS_STATE,
        due: Any = _DUE_TIMER,
        fired: Any = _FIRED,
    ) -> Iterator[DeliveryBatch]:
        now_ms = int(fired.micros // 1000)
        waiting = []
        for record in records.read():
            if record.not_before_ms <= now_ms:
                yield DeliveryBatch(
                    record.connector, record.prefix, Chunk(record.items), retry=record
                )
            else:
                waiting.append(record)
        records.clear()
        for record in waiting:
            records.add(record)
        if waiting:
            due.set(min(r.not_before_ms for r in waiting) / 1000)

    @on_timer(_END)
    def give_back(
        self,
        records: Any = _RECORDS_STATE,
        due: Any = _DUE_TIMER,
    ) -> Iterator[Any]:
        for record in records.read():
            yield beam.pvalue.TaggedOutput(REQUEUE, record)
        records.clear()
        due.clear()


def _key_record(data: bytes) -> tuple[str, bytes]:
    try:
        return str(orjson.loads(data).get("name", "")), data
    except orjson.JSONDecodeError:
        return "", data


class HoldRetries(beam.PTransform):
    """Streaming: hold retry-topic messages (encoded retry records) until each is due.

    Input: the messages' bytes. Output ``due``: one :class:`DeliveryBatch` per record, at
    its ``not_before`` (a processing-time timer), carrying the record (``retry``) so that
    Deliver makes one attempt and settles it (delivered, next delayed retry, or dead
    letter). Tagged ``invalid``: unreadable messages, as dead letters; ``requeue``: records
    still waiting when the input ends, to publish back. Blank messages (keep-alives) are
    ignored.
    """

    def expand(self, messages: Any) -> Any:
        return _hold_until_due(messages)


def _hold_until_due(messages: Any) -> Any:
    # Applied directly (not as a nested composite) so the steps keep their labels,
    # ``Retries/KeyByName`` and ``Retries/HoldUntilDue``, inside ReadRetries.
    return (
        messages
        | "KeyByName" >> beam.Map(_key_record).with_output_types(beam.typehints.Tuple[str, bytes])
        | "HoldUntilDue" >> beam.ParDo(_HoldUntilDue()).with_outputs("invalid", REQUEUE, main="due")
    )


class ReadRetries(beam.PTransform):
    """Streaming: read the retry subscription and :class:`HoldRetries` until due."""

    def __init__(self, subscription: str, reading: PubSubReading | None = None):
        super().__init__()
        self.subscription = subscription
        self.reading = reading or PubSubReading()

    def expand(self, pbegin: Any) -> Any:
        return _hold_until_due(
            pbegin
            | "ReadRetryTopic" >> self.reading.read(self.subscription)
            | "Data" >> beam.Map(lambda m: m.data).with_output_types(bytes)
        )


def _letters_to_messages(letters: list[DeadLetter]) -> Iterator[bytes]:
    count_dead_letters(letters)
    for letter in letters:
        yield orjson.dumps(letter.to_json_dict())


class PublishDeadLetters(beam.PTransform):
    """Streaming: publish each dead letter (the same JSON record) to a Pub/Sub topic."""

    def __init__(self, topic: str):
        super().__init__()
        self.topic = topic

    def expand(self, letters: Any) -> Any:
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (
            letters
            | "Encode" >> beam.FlatMap(_letters_to_messages).with_output_types(bytes)
            | "Publish" >> WriteToPubSub(self.topic)
        )
