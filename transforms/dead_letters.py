"""Dead letters: every stage's failures, flattened into one writer.

Each element is a list of :class:`~transforms.rules.records.DeadLetter` from one chunk or
one batch (so all share a stage and a connector). :class:`WriteDeadLetters` writes each
list as one NDJSON file below the dead-letter location (local, ``gs://``, ``s3://``),
named from its content so a rerun rewrites rather than duplicates, and two different
lists never share a name (:func:`~transforms.rules.letters.dead_letter_name`)::

    <dead_letter.path>/<stage>/<connector or "input">-<digest>.ndjson

Streaming with a Pub/Sub ``dead_letter.topic``, :class:`PublishDeadLetters` publishes
each dead letter as one message holding the same JSON record.

Whatever a dead letter holds, it is written as one JSON line
(:func:`~transforms.rules.letters.dead_letter_json`). A dead letter that cannot be
*stored* (the location refuses the write) fails the job loudly: losing it silently would
break the "nothing lost" promise.

Secrets: the writers take the config's secrets
(:class:`~transforms.connectors.secrets.ConfigSecrets`, read on the worker) and replace
them in every string they write, so no dead letter holds one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.connectors.file import join_path, write_bytes
from transforms.connectors.secrets import Secrets, secret_values
from transforms.rules.letters import dead_letter_json, dead_letter_name, encode_dead_letters
from transforms.rules.records import DeadLetter


def count_dead_letters(letters: list[DeadLetter], namespace: str | None = None) -> None:
    """Count dead letters per connector (``dead_lettered``) and per reason.

    Input dead letters (no connector) are counted by reason under ``telemetry``; their
    total is the ``invalid`` counter of the Parse stage. With ``namespace``, every letter
    is counted by reason there only (dead letters of a connector the run has no row for,
    e.g. ``connector_removed``).
    """
    by_reason: dict[tuple[str | None, str], int] = {}
    for d in letters:
        who = None if namespace else d.connector
        by_reason[(who, d.reason)] = by_reason.get((who, d.reason), 0) + 1
    for (connector, reason), n in by_reason.items():
        ns = metrics.connector_namespace(connector) if connector else namespace or metrics.PIPELINE
        if connector:
            Metrics.counter(ns, metrics.DEAD_LETTERED).inc(n)
        Metrics.counter(ns, metrics.dead_letter_reason_counter(reason)).inc(n)


class _WriteDeadLetters(beam.DoFn):
    def __init__(self, path: str, secrets: Secrets = (), connectors: Sequence[str] = ()):
        self.path = path
        self.secrets = secrets
        self.connectors = tuple(connectors)

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

    def process(self, letters: list[DeadLetter]) -> Iterator[str]:
        if not letters:  # the announcement (WriteDeadLetters' ``announce``)
            for cid in self.connectors:
                Metrics.counter(metrics.connector_namespace(cid), metrics.DEAD_LETTERED).inc(0)
        if letters:
            target = join_path(self.path, dead_letter_name(letters))
            write_bytes(target, encode_dead_letters(letters, self.values))
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
    most 30 s). ``secrets`` (:func:`~transforms.connectors.secrets.config_secrets`) never
    reach a file. ``announce`` (connector ids; streaming on Prism): report each one's
    ``dead_lettered`` counter at 0 from a first, empty element (see
    :class:`transforms.deliver.Deliver`).
    """

    def __init__(
        self,
        path: str,
        streaming: bool = False,
        clock: Any = None,
        max_events: int = 1000,
        max_wait_s: float = 30.0,
        secrets: Secrets = (),
        announce: Sequence[str] = (),
    ):
        super().__init__()
        self.announce = tuple(announce)
        self.path = path
        self.streaming = streaming
        self.clock = clock
        self.max_events = max_events
        self.max_wait_s = max_wait_s
        self.secrets = secrets

    def expand(self, letters: Any) -> Any:
        """The paths of the files written (one per list, or per bulk in streaming)."""
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
        if self.announce:
            letters = metrics.with_announcement(letters, [])
        write = _WriteDeadLetters(self.path, self.secrets, self.announce)
        return letters | "Write" >> beam.ParDo(write)


class _LettersToMessages(beam.DoFn):
    def __init__(self, secrets: Secrets):
        self.secrets = secrets

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

    def process(self, letters: list[DeadLetter]) -> Iterator[bytes]:
        yield from _letters_to_messages(letters, self.values)


def _letters_to_messages(letters: list[DeadLetter], secrets: Sequence[str] = ()) -> Iterator[bytes]:
    count_dead_letters(letters)
    for letter in letters:
        yield dead_letter_json(letter, secrets)


class PublishDeadLetters(beam.PTransform):
    """Streaming: publish each dead letter (the same JSON record) to a Pub/Sub topic.

    Total like the file writer (:func:`dead_letter_json`); ``secrets`` never reach a
    message.
    """

    def __init__(self, topic: str, secrets: Secrets = ()):
        super().__init__()
        self.topic = topic
        self.secrets = secrets

    def expand(self, letters: Any) -> Any:
        """Encode and publish; the result is Beam's ``WriteToPubSub`` output."""
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (
            letters
            | "Encode" >> beam.ParDo(_LettersToMessages(self.secrets)).with_output_types(bytes)
            | "Publish" >> WriteToPubSub(self.topic)
        )
