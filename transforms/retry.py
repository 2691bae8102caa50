r"""Delayed retries: where a batch that still failed after its immediate retries waits.

:class:`WriteRetries` stores each such batch as a retry record
(:class:`~transforms.rules.records.RetryRecord`) in the retry location; the ``retry``
command (:mod:`beam_pipeline.redeliver`) later redelivers what is due. Streaming with a
Pub/Sub ``retry_location``, :class:`PublishRetries` publishes them and
:class:`ReadRetries` (or :class:`HoldRetries`) holds what it reads back until due::

    <retry_location>/<connector>/<digest>.json        # a file per batch, or one message

Whatever a record holds, it is written as one JSON document
(:func:`~transforms.rules.letters.encode_retry_record`). A message that is not a usable
record, or the record of a connector no longer configured, becomes dead letters of its
own (:func:`~transforms.rules.letters.read_retry_message`) and never blocks the others.

Secrets: the writers take the config's secrets
(:class:`~transforms.connectors.secrets.ConfigSecrets`, read on the worker) and replace
them in every string they write, so no retry record or dead letter holds one. Dead
letters themselves are written by :mod:`transforms.dead_letters`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer

from transforms.connectors.base import DeliveryBatch
from transforms.connectors.file import join_path, write_bytes
from transforms.connectors.secrets import ConfigSecrets, Secrets, secret_values
from transforms.pubsub_read import PubSubReading
from transforms.rules.letters import encode_retry_record, read_retry_message, retry_record_path
from transforms.rules.records import Chunk, RetryRecord


def write_retry_record(location: str, record: RetryRecord, secrets: Sequence[str] = ()) -> str:
    """Store (or overwrite) a retry record under its stable name; return its path."""
    target = join_path(location, retry_record_path(record))
    write_bytes(target, encode_retry_record(record, secrets))
    return target


class _WriteRetries(beam.DoFn):
    def __init__(self, location: str, secrets: Secrets = ()):
        self.location = location
        self.secrets = secrets

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

    def process(self, record: RetryRecord) -> Iterator[str]:
        yield write_retry_record(self.location, record, self.values)


class _EncodeRecords(beam.DoFn):
    def __init__(self, secrets: Secrets):
        self.secrets = secrets

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

    def process(self, record: RetryRecord) -> Iterator[bytes]:
        yield encode_retry_record(record, self.values)


class WriteRetries(beam.PTransform):
    """Store batches waiting for a delayed retry in the retry location (dir, gs://, s3://).

    One JSON file per batch, ``<retry_location>/<connector>/<digest>.json``, holding a
    :class:`~transforms.rules.records.RetryRecord`. The ``retry`` command redelivers what
    is due and rewrites or removes each file. ``secrets`` never reach a file.
    """

    def __init__(self, location: str, secrets: Secrets = ()):
        super().__init__()
        if location.startswith("projects/"):
            # A Pub/Sub topic written as a path would strand records in a local folder
            # named projects/P/topics/T that nothing reads.
            raise ValueError(
                f"retry location {location!r} is a Pub/Sub topic: use PublishRetries for it"
            )
        self.location = location
        self.secrets = secrets

    def expand(self, records: Any) -> Any:
        return records | beam.ParDo(_WriteRetries(self.location, self.secrets))


class PublishRetries(beam.PTransform):
    """Publish retry records to the Pub/Sub retry topic (one message per batch).

    Streaming, and the ``replay`` command when ``retry_location`` is a topic (the streaming
    job then holds and redelivers them). ``secrets`` never reach a message.
    """

    def __init__(self, topic: str, secrets: Secrets = ()):
        super().__init__()
        self.topic = topic
        self.secrets = secrets

    def expand(self, records: Any) -> Any:
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (
            records
            | "Encode" >> beam.ParDo(_EncodeRecords(self.secrets)).with_output_types(bytes)
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

    A message that is not a usable record
    (:func:`~transforms.rules.letters.read_retry_message`) is emitted at once as dead
    letters under ``invalid``; it never enters state.

    When the input ends (the watermark passes the end of the window: a drained job, a
    bounded test), records still waiting are emitted unchanged under ``requeue``, for the
    retry topic, and their timer is cleared: a waiting record is never dropped, and a
    pending processing-time timer does not keep a finished Flink job running (Flink waits
    for it forever, see docs/flink.md).
    """

    def __init__(self, connectors: frozenset[str] | None = None, secrets: Secrets = ()):
        self.connectors = connectors
        self.secrets = secrets

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

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
        if not isinstance(data, bytes) or data.strip():  # blank: a keep-alive message
            read = read_retry_message(data, self.connectors, self.values)
            if isinstance(read, RetryRecord):
                records.add(read)
                due.set(min(r.not_before_ms for r in records.read()) / 1000)
                end.set(window.end)
            else:
                yield beam.pvalue.TaggedOutput("invalid", read)

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
    """Key a retry message by its record's ``name``; never raises.

    A message that is not a JSON object with a string ``name`` gets the key ``""``;
    :class:`_HoldUntilDue` then turns it into a dead letter.
    """
    try:
        tree = orjson.loads(data)
    except Exception:  # not JSON, not even bytes: a dead letter downstream
        return "", data
    name = tree.get("name") if isinstance(tree, dict) else None
    return (name if isinstance(name, str) else ""), data


class HoldRetries(beam.PTransform):
    """Streaming: hold retry-topic messages (encoded retry records) until each is due.

    Input: the messages' bytes. Output ``due``: one :class:`DeliveryBatch` per record, at
    its ``not_before`` (a processing-time timer), carrying the record (``retry``) so that
    Deliver makes one attempt and settles it (delivered, next delayed retry, or dead
    letter). Tagged ``invalid``: lists of dead letters for messages that are not usable
    records (``invalid_retry_record``, the raw bytes kept) and, given the ``config``, for
    records of a connector it no longer has (``connector_removed``, one per event);
    ``requeue``: records still waiting when the input ends, to publish back. Blank
    messages (keep-alives) are ignored. ``secrets`` (default: the config's) never reach a
    dead letter.
    """

    def __init__(self, config: Any = None, secrets: Secrets | None = None):
        super().__init__()
        self.connectors = _connector_ids(config)
        self.secrets = _secrets_for(config, secrets)

    def expand(self, messages: Any) -> Any:
        return _hold_until_due(messages, self.connectors, self.secrets)


def _connector_ids(config: Any) -> frozenset[str] | None:
    return None if config is None else frozenset(c.id for c in config.connectors)


def _secrets_for(config: Any, secrets: Secrets | None) -> Secrets:
    if secrets is not None:
        return secrets
    return ConfigSecrets(config) if config is not None else ()


def _hold_until_due(messages: Any, connectors: frozenset[str] | None, secrets: Secrets) -> Any:
    # Applied directly (not as a nested composite) so the steps keep their labels,
    # ``Retries/KeyByName`` and ``Retries/HoldUntilDue``, inside ReadRetries.
    return (
        messages
        | "KeyByName" >> beam.Map(_key_record).with_output_types(beam.typehints.Tuple[str, bytes])
        | "HoldUntilDue"
        >> beam.ParDo(_HoldUntilDue(connectors, secrets)).with_outputs(
            "invalid", REQUEUE, main="due"
        )
    )


class ReadRetries(beam.PTransform):
    """Streaming: read the retry subscription and :class:`HoldRetries` until due."""

    def __init__(
        self,
        subscription: str,
        reading: PubSubReading | None = None,
        config: Any = None,
        secrets: Secrets | None = None,
    ):
        super().__init__()
        self.subscription = subscription
        self.reading = reading or PubSubReading()
        self.connectors = _connector_ids(config)
        self.secrets = _secrets_for(config, secrets)

    def expand(self, pbegin: Any) -> Any:
        return _hold_until_due(
            pbegin
            | "ReadRetryTopic" >> self.reading.read(self.subscription)
            | "Data" >> beam.Map(lambda m: m.data).with_output_types(bytes),
            self.connectors,
            self.secrets,
        )
