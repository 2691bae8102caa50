r"""Retry and dead letters: where failed events wait, and where they end.

Delayed retries: :class:`WriteRetries` stores each batch that still failed after the
immediate retries as a retry record; the ``retry`` command (:mod:`beam_pipeline.redeliver`)
later redelivers what is due. Streaming with a Pub/Sub ``retry_topic``,
:class:`PublishRetries` publishes them and :class:`HoldRetries` holds what it reads back
until due.

Dead letters: every stage's failures, flattened into one writer.

Each element is a list of :class:`~transforms.rules.records.DeadLetter` from one chunk or
one batch (so all share a stage and a connector). Each list becomes one NDJSON file below
the dead-letter location, named from its content so a rerun rewrites rather than
duplicates, and two different lists never share a name::

    <dead_letter.path>/<stage>/<connector or "input">-<digest>.ndjson

The writers are total: whatever a dead letter or retry record holds, it is written as
one JSON line (:func:`dead_letter_json`, :func:`encode_retry_record`). A value JSON cannot
carry (nesting deeper than orjson writes, a lone surrogate, a non-string key, an integer
past 64 bits, bytes) is written as text instead and noted, e.g. a dead letter whose event
is nested 300 levels deep::

    {"stage": "deliver", "reason": "not_retryable", ..., "event_id": "e1",
     "original": "{\"event_id\": \"e1\", ...}", "original_encoding": "utf-8",
     "original_bytes": 1650, "original_truncated": false,
     "event_unserializable": "TypeError: Recursion limit reached"}

A dead letter that cannot be *stored* (the location refuses the write) fails the job
loudly: losing it silently would break the "nothing lost" promise.

Poison retry records (not JSON, not an object, fields missing or of the wrong type, a
connector no longer configured) never block the others: each becomes a dead letter of
its own (``stage: retry``, reason ``invalid_retry_record`` keeping the raw bytes as
``original``, or ``connector_removed`` keeping each event for ``replay``).

Secrets: writers given the config's secret values (:func:`config_secrets`) replace them
in every string of what they write (``error`` and ``last_error`` also lose URL query
strings and key-like parameters), so no dead letter or retry record holds one.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from pydantic import BaseModel, SecretStr

from transforms import metrics
from transforms.connectors import _policy
from transforms.connectors.base import DeliveryBatch
from transforms.connectors.file import join_path, write_bytes
from transforms.pubsub_read import PubSubReading
from transforms.rules.encode import dumps
from transforms.rules.events import original_text
from transforms.rules.naming import batch_digest
from transforms.rules.records import Chunk, DeadLetter, RetryRecord, original_event

INVALID_RETRY_RECORD = "invalid_retry_record"
"""Reason of a retry record that cannot be read as one (the raw bytes are kept)."""

CONNECTOR_REMOVED = "connector_removed"
"""Reason of the events of a retry record whose connector is no longer configured."""

RETRY_STAGE = "retry"
"""Stage of the dead letters made while reading retry records back."""

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
"""Characters a dead-letter file name never takes from a stage or connector id."""

_CONNECTOR_ID = re.compile(r"^[a-z0-9_]+$")
"""What a connector id looks like (the config's rule)."""

_MAX_TIME_MS = 253_402_300_800_000
"""Year 10000 in epoch milliseconds: a ``not_before_ms`` must come before it."""

_RENDER_MAX_NODES = 2_000_000
"""Values rendered as text stop after this many nodes (only a cycle gets there)."""


def config_secrets(config: Any) -> tuple[str, ...]:
    """The secret values of a validated config, for :func:`redact_letter` and the writers.

    Every ``SecretStr`` field (the ``${env:NAME}`` secrets: API keys, headers, the hash
    key), each connector's typed ``deliver`` section included, and what each connector's
    sink declares secret (:meth:`~transforms.connectors.base.Sink.secret_values`, e.g. the
    secret parts of an endpoint); values shorter than 4 characters are left out
    (:func:`transforms.connectors._policy.secret_values`).
    """
    from transforms.connectors import make_sink

    found: list[Any] = []
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, SecretStr):
            found.append(node)
        elif isinstance(node, BaseModel):
            stack.extend(getattr(node, name) for name in type(node).model_fields)
            if isinstance(getattr(type(node), "deliver_config", None), cached_property):
                deliver = node.deliver_config  # type: ignore[attr-defined]
                stack.append(deliver)
                try:  # a sink is built, not opened: no client, no connection
                    sink = make_sink(node.id, node.type, deliver)  # type: ignore[attr-defined]
                    found.extend(getattr(sink, "secret_values", tuple)())
                except Exception:  # its SecretStr fields above are redacted all the same
                    pass
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)
    return _policy.secret_values(*found)


class ConfigSecrets:
    """Where a config's secrets are, for the writers: values are read on each worker.

    The writers' DoFns hold this (the config, with references only: see
    :mod:`transforms.connectors.secrets`) and call :meth:`values` in ``setup``, so no
    secret value is ever part of the job graph.
    """

    def __init__(self, config: Any):
        self.config = config

    def values(self) -> tuple[str, ...]:
        """The secret values (:func:`config_secrets`)."""
        return config_secrets(self.config)


Secrets = ConfigSecrets | Sequence[str]
"""What the writers take: a :class:`ConfigSecrets`, or values (tests)."""


def secret_values(secrets: Secrets) -> tuple[str, ...]:
    """The values of ``secrets`` (read now, for a :class:`ConfigSecrets`)."""
    return secrets.values() if isinstance(secrets, ConfigSecrets) else tuple(secrets)


def _clean(text: str) -> str:
    """``text`` without lone surrogates (written as backslash escapes), so UTF-8 carries it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)  # NaN and Infinity as Python's json spells them
    if isinstance(value, bytes | bytearray):
        return json.dumps("base64:" + base64.b64encode(bytes(value)).decode("ascii"))
    try:
        return json.dumps(repr(value), ensure_ascii=False)
    except Exception:  # a repr that raises: say what it was, at least
        return json.dumps(f"<unprintable {type(value).__name__}>")


def render_text(value: Any) -> str:
    """Any value as JSON-like text, however deep: the fallback when orjson refuses it.

    Iterative, so nesting deeper than orjson (254 levels) or Python's recursion limit
    writes fine. Strings keep lone surrogates (see :func:`_clean`); non-string keys are
    written as strings; NaN and infinities as ``NaN``/``Infinity``; bytes as
    ``"base64:..."``; anything else as its ``repr``:

    >>> render_text({"a": [1, float("nan"), b"x"], 2: None})
    '{"a": [1, NaN, "base64:eA=="], "2": null}'
    """
    out: list[str] = []
    stack: list[Any] = [value]
    literal = object()  # marks a piece of text already rendered
    nodes = 0
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes > _RENDER_MAX_NODES:
            out.append(" ...")
            break
        if isinstance(item, tuple) and len(item) == 2 and item[0] is literal:
            out.append(item[1])
        elif isinstance(item, dict):
            parts: list[Any] = [(literal, "{")]
            for n, (key, val) in enumerate(item.items()):
                name = key if isinstance(key, str) else _scalar_text(key).strip('"')
                sep = ", " if n else ""
                parts.extend([(literal, f"{sep}{json.dumps(name, ensure_ascii=False)}: "), val])
            parts.append((literal, "}"))
            stack.extend(reversed(parts))
        elif isinstance(item, list | tuple):
            parts = [(literal, "[")]
            for n, val in enumerate(item):
                parts.extend([(literal, ", ")] if n else [])
                parts.append(val)
            parts.append((literal, "]"))
            stack.extend(reversed(parts))
        else:
            out.append(_scalar_text(item))
    return "".join(out)


def _safe(value: Any) -> tuple[Any, bool]:
    """``(value, True)`` if orjson writes it, else ``(a text rendering of it, False)``."""
    if isinstance(value, str):
        cleaned = _clean(value)
        return cleaned, cleaned is value
    try:
        orjson.dumps(value)
    except Exception:  # orjson.JSONEncodeError (a TypeError), or a failing __repr__ inside
        return _clean(render_text(value)), False
    return value, True


def _error_text(exc: BaseException) -> str:
    return _clean(f"{type(exc).__name__}: {exc}")


def _redact_text(text: str, secrets: Sequence[str]) -> str:
    """``text`` redacted (:func:`transforms.connectors._policy.redact`) if a secret is in it.

    Text without a secret is left as it is: data (an event's URLs) keeps its query strings.
    """
    redacted = _policy.redact(text, secrets)
    return text if redacted == _policy.redact(text) else redacted


def _redact_tree(value: Any, secrets: Sequence[str]) -> Any:
    """A copy of ``value`` with each secret replaced in every string, keys included.

    Iterative (any depth); a container met twice (a cycle) becomes ``"<cycle>"``.
    """

    def fix(v: Any) -> Any:
        return _redact_text(v, secrets) if isinstance(v, str) else v

    if not isinstance(value, dict | list):
        return fix(value)
    root: Any = {} if isinstance(value, dict) else []
    seen = {id(value)}
    stack = [(value, root)]
    while stack:
        src, dst = stack.pop()
        for key, val in src.items() if isinstance(src, dict) else enumerate(src):
            child: Any
            if isinstance(val, dict | list):
                if id(val) in seen:
                    child = "<cycle>"
                else:
                    seen.add(id(val))
                    child = {} if isinstance(val, dict) else []
                    stack.append((val, child))
            else:
                child = fix(val)
            if isinstance(dst, dict):
                dst[fix(key)] = child
            else:
                dst.append(child)
    return root


def _redact_original(original: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    out = dict(_redact_tree(original, secrets))
    text = original.get("original")
    if original.get("original_encoding") == "base64" and isinstance(text, str):
        try:
            raw = base64.b64decode(text).decode("utf-8", "surrogateescape")
        except ValueError:
            return out
        fixed = _redact_text(raw, secrets).encode("utf-8", "surrogateescape")
        out["original"] = base64.b64encode(fixed).decode("ascii")
    return out


def redact_letter(letter: DeadLetter, secrets: Sequence[str]) -> DeadLetter:
    """``letter`` with no secret left in it (a copy; the same letter if there are none).

    ``error`` also loses URL query strings and key-like parameters
    (:func:`transforms.connectors._policy.redact`); in the event and the original only
    strings holding a secret are redacted (base64 originals too), so data keeps its URLs.
    """
    if not secrets:
        return letter
    error = letter.error
    return dataclasses.replace(
        letter,
        error=_policy.redact(error, secrets) if isinstance(error, str) else error,
        event=_redact_tree(letter.event, secrets) if letter.event is not None else None,
        original=_redact_original(letter.original, secrets)
        if isinstance(letter.original, dict)
        else _redact_tree(letter.original, secrets),
    )


def _has_secret(data: bytes, secrets: Sequence[str]) -> bool:
    """Whether a written line holds a secret, however spelled (see ``_policy.redact``)."""
    text = data.decode("utf-8", "replace")
    return _policy.redact(text, secrets) != _policy.redact(text)


def _salvage_letter(letter: DeadLetter, problem: str) -> dict[str, Any]:
    """The dead-letter record with what orjson refuses written as text (see the module doc)."""
    out: dict[str, Any] = {}
    unwritable: list[str] = []
    fields = {
        "stage": letter.stage,
        "connector": letter.connector,
        "reason": letter.reason,
        "error": letter.error,
        "status": letter.status,
        "attempts": letter.attempts,
        "event_id": letter.event_id,
        "failed_at": letter.failed_at,
    }
    extra = letter.original if isinstance(letter.original, dict) else {"original": letter.original}
    for key, value in [*fields.items(), *extra.items()]:
        name = _clean(key) if isinstance(key, str) else _clean(render_text(key).strip('"'))
        out[name], ok = _safe(value)
        if not ok:
            unwritable.append(name)
    if letter.event is not None:
        event, ok = _safe(letter.event)
        if ok:
            out["event"] = event
        else:
            text = original_text(render_text(letter.event).encode("utf-8", "backslashreplace"))
            if "original" in out:  # an original of its own already: keep both
                out["event_text"] = text["original"]
            else:
                out.update(text)
            out["event_unserializable"] = problem
    if unwritable:
        out["unserializable"] = unwritable
    return out


def dead_letter_json(letter: DeadLetter, secrets: Sequence[str] = ()) -> bytes:
    """One dead letter as one JSON line (no newline); never raises.

    The record of :meth:`DeadLetter.to_json_dict`, or when orjson cannot write it, the
    same with what it refused written as text (see the module doc). ``secrets`` are
    replaced wherever they occur (see :func:`redact_letter`).
    """
    if secrets and isinstance(letter.error, str):
        error = _policy.redact(letter.error, secrets)
        if error != letter.error:
            letter = dataclasses.replace(letter, error=error)
    try:
        data = dumps(letter.to_json_dict())
    except Exception as exc:  # TypeError from orjson, or a field of the wrong type
        problem = _error_text(exc)
        try:
            data = dumps(_salvage_letter(letter, problem))
        except Exception as again:  # pragma: no cover - _salvage_letter writes only text
            data = dumps(
                {"stage": "dead_letter", "reason": "unwritable", "error": _error_text(again)}
            )
    if secrets and _has_secret(data, secrets):
        return dead_letter_json(redact_letter(letter, secrets))
    return data


def encode_dead_letters(letters: Sequence[DeadLetter], secrets: Sequence[str] = ()) -> bytes:
    r"""Dead letters as NDJSON: one line per letter, each ending in ``\n``; never raises."""
    return b"".join(dead_letter_json(d, secrets) + b"\n" for d in letters)


def dead_letter_name(letters: list[DeadLetter]) -> str:
    """The content-derived file name of a list of dead letters.

    ``<stage>/<connector or "input">-<digest>.ndjson``: the digest covers each letter's
    ``event_id``, or for a letter without one (invalid input, an unreadable file, a
    poison retry record) its whole record but ``failed_at``. So a rerun rewrites the same
    name, and two lists with different content (two damaged files) never share one:

    >>> a = DeadLetter("read", "unreadable_input", "EOF", original={"path": "a.gz"})
    >>> b = DeadLetter("read", "unreadable_input", "EOF", original={"path": "b.gz"})
    >>> dead_letter_name([a]) != dead_letter_name([b])
    True
    """
    first = letters[0]

    def key(d: DeadLetter) -> str:
        if isinstance(d.event_id, str):
            return _clean(d.event_id)
        content = dead_letter_json(dataclasses.replace(d, failed_at=""))
        return content.decode("utf-8")

    # Stages and connector ids are [a-z0-9_]; anything else (a connector id read from a
    # poison retry record) must not steer the file out of the dead-letter location.
    stage = _UNSAFE_NAME.sub("_", str(first.stage))
    who = _UNSAFE_NAME.sub("_", str(first.connector or "input"))
    return f"{stage}/{who}-{batch_digest(key(d) for d in letters)}.ndjson"


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
    def __init__(self, path: str, secrets: Secrets = ()):
        self.path = path
        self.secrets = secrets

    def setup(self) -> None:
        self.values = secret_values(self.secrets)

    def process(self, letters: list[DeadLetter]) -> Iterator[str]:
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
    most 30 s). ``secrets`` (:func:`config_secrets`) never reach a file.
    """

    def __init__(
        self,
        path: str,
        streaming: bool = False,
        clock: Any = None,
        max_events: int = 1000,
        max_wait_s: float = 30.0,
        secrets: Secrets = (),
    ):
        super().__init__()
        self.path = path
        self.streaming = streaming
        self.clock = clock
        self.max_events = max_events
        self.max_wait_s = max_wait_s
        self.secrets = secrets

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
        return letters | "Write" >> beam.ParDo(_WriteDeadLetters(self.path, self.secrets))


def _salvage_record(record: RetryRecord) -> dict[str, Any]:
    """The stored form of ``record`` with what orjson refuses written as text.

    A record salvaged this way cannot be retried (its items are not whole any more): read
    back, it becomes an ``invalid_retry_record`` dead letter that keeps all of it as text.
    """
    unwritable: list[str] = []

    def put(where: dict[str, Any], name: str, value: Any, path: str) -> None:
        where[name], ok = _safe(value)
        if not ok:
            unwritable.append(path)

    out: dict[str, Any] = {"version": 1}
    for name in (
        "connector",
        "prefix",
        "name",
        "attempts",
        "delayed_attempts",
        "first_failed_at",
        "last_error",
        "last_status",
        "not_before_ms",
    ):
        put(out, name, getattr(record, name, None), name)
    items = []
    raw_items = record.items if isinstance(record.items, list | tuple) else [record.items]
    for n, item in enumerate(raw_items):
        entry: dict[str, Any] = {}
        fields = item._asdict() if hasattr(item, "_asdict") else {"item": item}
        value: Any
        for name, value in fields.items():
            if name == "event":
                with contextlib.suppress(Exception):  # a raw line that does not parse: kept
                    value = original_event(value)
            if name == "data" and isinstance(value, bytes) and fields.get("record") is None:
                try:
                    entry["record"] = orjson.loads(value)
                    value = None
                except Exception:  # not JSON: kept as text below
                    pass
            put(entry, name, value, f"items[{n}].{name}")
        items.append(entry)
    out["items"] = items
    out["unserializable"] = unwritable
    return out


def encode_retry_record(record: RetryRecord, secrets: Sequence[str] = ()) -> bytes:
    """A retry record's stored form as one JSON document (no newline); never raises.

    :meth:`RetryRecord.to_json_dict`, or when orjson cannot write it, the same with what
    it refused written as text (:func:`_salvage_record`). With ``secrets``, ``last_error``
    loses URL query strings and key-like parameters, and every secret value is replaced
    wherever it occurs.
    """
    try:
        data = orjson.dumps(record.to_json_dict())
    except Exception as exc:  # TypeError from orjson, a bad raw line, a field of the wrong type
        salvaged = _salvage_record(record)
        salvaged["unserializable_error"] = _error_text(exc)
        data = orjson.dumps(salvaged)
    if secrets:
        tree = orjson.loads(data)
        if isinstance(tree.get("last_error"), str):
            tree["last_error"] = _policy.redact(tree["last_error"], secrets)
        if _has_secret(data, secrets):
            tree = _redact_tree(tree, secrets)
        data = orjson.dumps(tree)
    return data


def write_retry_record(location: str, record: RetryRecord, secrets: Sequence[str] = ()) -> str:
    """Store (or overwrite) a retry record under its stable name; return its path."""
    target = join_path(location, _clean(str(record.name)))
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

    One JSON file per batch, ``<retry_topic>/<connector>/<digest>.json``, holding a
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

    Streaming, and the ``replay`` command when ``retry_topic`` is a topic (the streaming
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


class InvalidRetryRecordError(ValueError):
    """Bytes that are not a usable retry record; the message says what is wrong."""


def _record_problems(record: RetryRecord) -> list[str]:
    problems = []
    for name in ("connector", "prefix", "name", "first_failed_at", "last_error"):
        if not isinstance(getattr(record, name), str):
            problems.append(f"{name} is not a string")
    if isinstance(record.connector, str) and not _CONNECTOR_ID.match(record.connector):
        problems.append(f"connector {record.connector!r} is not a connector id ([a-z0-9_]+)")
    for name in ("name", "prefix"):
        value = getattr(record, name)
        if isinstance(value, str) and (value.startswith("/") or ".." in value.split("/")):
            problems.append(f"{name} {value!r} is not a relative path inside the location")
    if record.name == "":
        problems.append("name is empty")
    if not 0 <= record.not_before_ms < _MAX_TIME_MS:
        problems.append(f"not_before_ms {record.not_before_ms} is not a time before year 10000")
    if not (0 <= record.attempts < 2**31 and 0 <= record.delayed_attempts < 2**31):
        problems.append("attempts and delayed_attempts must be counts")
    if record.last_status is not None and type(record.last_status) is not int:
        problems.append("last_status is not an integer")
    if not record.items:
        problems.append("items is empty")
    for n, item in enumerate(record.items):
        if not isinstance(item.event_id, str) or not isinstance(item.event_type, str):
            problems.append(f"items[{n}]: event_id and event_type must be strings")
        if item.time_ms is not None and type(item.time_ms) is not int:
            problems.append(f"items[{n}].time_ms is not an integer")
        if not isinstance(item.record, dict) or not isinstance(item.event, dict):
            problems.append(f"items[{n}]: record and event must be JSON objects")
        if item.data is not None:
            problems.append(f"items[{n}].data must be null (the record is stored once)")
        if len(problems) >= 5:
            break
    return problems


def read_retry_record(data: bytes) -> RetryRecord:
    """Read a stored or published retry record, checking every field it needs.

    Raises:
        InvalidRetryRecordError: not JSON, not an object, a field missing or of the wrong
            type (``items`` of objects with string ids, object ``record`` and ``event``...).
    """
    try:
        tree = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRetryRecordError(f"not JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise InvalidRetryRecordError(f"a JSON {type(tree).__name__}, not an object")
    if not isinstance(tree.get("items"), list) or not all(
        isinstance(i, dict) for i in tree["items"]
    ):
        raise InvalidRetryRecordError("items is not a list of objects")
    try:
        record = RetryRecord.from_json_dict(tree)
    except KeyError as exc:
        raise InvalidRetryRecordError(f"field {exc} is missing") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRetryRecordError(_error_text(exc)) from None
    problems = _record_problems(record)
    if problems:
        raise InvalidRetryRecordError("; ".join(problems))
    return record


def invalid_record_letter(data: bytes, error: str, secrets: Sequence[str] = ()) -> DeadLetter:
    """The dead letter of an unusable retry record: reason ``invalid_retry_record``.

    It keeps the raw bytes as ``original`` (UTF-8 text or base64, truncated past 64 KiB
    with the length noted), so nothing in them is lost.
    """
    raw = data if isinstance(data, bytes) else _clean(str(data)).encode("utf-8")
    letter = DeadLetter(
        stage=RETRY_STAGE,
        reason=INVALID_RETRY_RECORD,
        error=f"not a retry record: {error}",
        original=original_text(raw),
    )
    return redact_letter(letter, secrets)


def removed_connector_letters(record: RetryRecord, secrets: Sequence[str] = ()) -> list[DeadLetter]:
    """One dead letter per event of a record whose connector is no longer configured.

    Reason ``connector_removed``; each keeps its event, so adding the connector back and
    running ``replay --connector <id>`` delivers them.
    """
    cid = record.connector
    error = (
        f"connector {cid!r} is not in the config any more; to deliver these events add it "
        f"back and run: replay --dead-letters <dead_letter.path> --connector {cid}"
    )
    return [
        redact_letter(
            DeadLetter.for_event(
                RETRY_STAGE,
                cid,
                item.event,
                CONNECTOR_REMOVED,
                error,
                record.last_status,
                record.attempts,
            ),
            secrets,
        )
        for item in record.items
    ]


def read_retry_message(
    data: bytes,
    connectors: Iterable[str] | None = None,
    secrets: Sequence[str] = (),
    where: str = "",
) -> RetryRecord | list[DeadLetter]:
    """A retry message or file as its record, or as the dead letters it becomes instead.

    ``connectors``, when given, are the configured ids: a record of any other connector
    becomes ``connector_removed`` dead letters. ``where`` (a file path) prefixes errors.
    """
    try:
        record = read_retry_record(data)
    except InvalidRetryRecordError as exc:
        return [invalid_record_letter(data, f"{where}{': ' if where else ''}{exc}", secrets)]
    if connectors is not None and record.connector not in set(connectors):
        return removed_connector_letters(record, secrets)
    return record


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

    A message that is not a usable record (:func:`read_retry_message`) is emitted at
    once as dead letters under ``invalid``; it never enters state.

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
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (
            letters
            | "Encode" >> beam.ParDo(_LettersToMessages(self.secrets)).with_output_types(bytes)
            | "Publish" >> WriteToPubSub(self.topic)
        )
