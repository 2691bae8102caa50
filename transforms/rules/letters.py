r"""Dead letters and retry records as data: redact, write as JSON, read back, check.

Plain Python (no Beam, no I/O): the writers in :mod:`transforms.dead_letters` and
:mod:`transforms.retry`, and the ``retry`` and ``replay`` commands, call these.

The encoders are total: whatever a dead letter or retry record holds, it is written as
one JSON line (:func:`dead_letter_json`, :func:`encode_retry_record`). A value JSON cannot
carry (nesting deeper than orjson writes, a lone surrogate, a non-string key, an integer
past 64 bits, bytes) is written as text instead and noted, e.g. a dead letter whose event
is nested 300 levels deep::

    {"stage": "deliver", "reason": "not_retryable", ..., "event_id": "e1",
     "original": "{\"event_id\": \"e1\", ...}", "original_encoding": "utf-8",
     "original_bytes": 1650, "original_truncated": false,
     "event_unserializable": "TypeError: Recursion limit reached"}

Each list of dead letters has a content-derived file name (:func:`dead_letter_name`)::

    <stage>/<connector or "input">-<digest>.ndjson

Poison retry records (not JSON, not an object, fields missing or of the wrong type, a
connector no longer configured) never block the others: :func:`read_retry_message` turns
each into dead letters of its own (``stage: retry``, reason ``invalid_retry_record``
keeping the raw bytes as ``original``, or ``connector_removed`` keeping each event for
``replay``).

Secrets: given the config's secret values, the encoders replace them in every string of
what they write (``error`` and ``last_error`` also lose URL query strings and key-like
parameters, :func:`transforms.rules.redact.redact`), so no dead letter or retry record
holds one.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from transforms.rules.encode import dumps
from transforms.rules.events import original_text
from transforms.rules.naming import batch_digest
from transforms.rules.records import DeadLetter, RetryRecord, original_event
from transforms.rules.redact import redact

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
    """``text`` redacted (:func:`transforms.rules.redact.redact`) if a secret is in it.

    Text without a secret is left as it is: data (an event's URLs) keeps its query strings.
    """
    redacted = redact(text, secrets)
    return text if redacted == redact(text) else redacted


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
    (:func:`transforms.rules.redact.redact`); in the event and the original only
    strings holding a secret are redacted (base64 originals too), so data keeps its URLs.
    """
    if not secrets:
        return letter
    error = letter.error
    return dataclasses.replace(
        letter,
        error=redact(error, secrets) if isinstance(error, str) else error,
        event=_redact_tree(letter.event, secrets) if letter.event is not None else None,
        original=_redact_original(letter.original, secrets)
        if isinstance(letter.original, dict)
        else _redact_tree(letter.original, secrets),
    )


def _has_secret(data: bytes, secrets: Sequence[str]) -> bool:
    """Whether a written line holds a secret, however spelled (see :func:`redact`)."""
    text = data.decode("utf-8", "replace")
    return redact(text, secrets) != redact(text)


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
        error = redact(letter.error, secrets)
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


_SCALAR_FIELDS = tuple(f.name for f in dataclasses.fields(RetryRecord) if f.name != "items")
"""A retry record's fields besides ``items``, in declaration order."""


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
    for name in _SCALAR_FIELDS:
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
            tree["last_error"] = redact(tree["last_error"], secrets)
        if _has_secret(data, secrets):
            tree = _redact_tree(tree, secrets)
        data = orjson.dumps(tree)
    return data


def retry_record_path(record: RetryRecord) -> str:
    """Where a retry record is stored, relative to the retry location: its ``name``.

    Lone surrogates are escaped, so any name read back makes a valid path; e.g. a record
    named ``"hook/3f2a.json"`` is stored at ``<retry_location>/hook/3f2a.json``.
    """
    return _clean(str(record.name))


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
