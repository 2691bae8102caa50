r"""Values that flow between stages: packaged records and dead letters.

A dead letter is one JSON object per event that could not be delivered::

    {"stage": "parse", "connector": null, "reason": "bad_json",
     "error": "not valid JSON: unexpected character: line 1 column 15 (char 14)",
     "status": null, "attempts": 0, "event_id": null,
     "original": "{\"event_id\": \"x\", broken", "original_encoding": "utf-8",
     "original_bytes": 24, "original_truncated": false,
     "failed_at": "2026-11-26T07:50:00.123Z"}

The same shape serves invalid input (``stage: parse``) and delivery failures
(``stage: deliver``, with ``connector`` and the parsed ``event`` instead of ``original``),
so one reader and the ``replay`` command handle both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson


def utc_now_iso() -> str:
    """Return the current UTC time as ISO-8601 with milliseconds and a ``Z``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


Original = dict[str, Any] | bytes
"""An event as kept for dead letters: parsed, or its raw line (see :attr:`Packaged.event`)."""


@dataclass
class DeadLetter:
    """A refused or undeliverable event, with everything needed to understand or replay it."""

    stage: str
    reason: str
    error: str
    connector: str | None = None
    status: int | None = None
    attempts: int = 0
    event_id: str | None = None
    event: dict[str, Any] | None = None
    original: dict[str, Any] = field(default_factory=dict)
    failed_at: str = field(default_factory=utc_now_iso)

    @classmethod
    def for_input(cls, reason: str, error: str, raw: bytes) -> DeadLetter:
        """A line of input that is not an event (``stage: parse``)."""
        from transforms.rules.events import original_text

        return cls(stage="parse", reason=reason, error=error, original=original_text(raw))

    @classmethod
    def for_event(
        cls,
        stage: str,
        connector: str,
        event: Original,
        reason: str,
        error: str,
        status: int | None = None,
        attempts: int = 0,
    ) -> DeadLetter:
        """A valid event that one connector could not package or deliver.

        ``event`` may be the event's raw line (see :attr:`Packaged.event`); the dead
        letter always holds the parsed event.
        """
        event = original_event(event)
        return cls(
            stage=stage,
            reason=reason,
            error=error,
            connector=connector,
            status=status,
            attempts=attempts,
            event_id=event.get("event_id"),
            event=event,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The record as written to the dead-letter location."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "connector": self.connector,
            "reason": self.reason,
            "error": self.error,
            "status": self.status,
            "attempts": self.attempts,
            "event_id": self.event_id,
            "failed_at": self.failed_at,
        }
        if self.event is not None:
            out["event"] = self.event
        out.update(self.original)
        return out


class Packaged(NamedTuple):
    """One event ready for a connector: the destination record and where it came from.

    ``event`` is the original (unfiltered) event, kept for dead letters; it never leaves
    the pipeline for the connector. It is the event's raw input line (``bytes``) when
    Parse had one that says everything (:attr:`Chunk.raw`), else the parsed dict: one
    small object per event instead of the parsed event's dozens, so the parsed event is
    freed right after Package, while still in the CPU's caches, and a batch waiting for
    its write holds a fraction of the memory. :func:`original_event` gives the dict
    either way.

    ``record`` is what the connector sends. ``data``, when set, is the record already
    serialized (:func:`transforms.rules.encode.record_json`: compact JSON, or the event's
    input line when the connector passes it on unchanged): Package serializes while the
    record is still in the CPU's caches, for connectors that send records as JSON, and
    then keeps only the bytes (``record`` is None: the dict is freed
    while still cached, and :func:`record_of` rebuilds it in the rare paths that need it).
    """

    event_id: str
    time_ms: int | None
    event_type: str
    record: dict[str, Any] | None
    event: Original
    data: bytes | None = None


def original_event(event: Original) -> dict[str, Any]:
    """The original event as a dict, parsed again when it was kept as its raw line."""
    if isinstance(event, bytes):
        parsed: dict[str, Any] = orjson.loads(event)
        return parsed
    return event


def record_of(item: Packaged) -> dict[str, Any]:
    """An item's record as a dict, rebuilt from ``data`` when Package kept only the bytes."""
    if item.record is not None:
        return item.record
    if item.data is None:
        raise ValueError(f"packaged event {item.event_id!r} has neither record nor data")
    record: dict[str, Any] = orjson.loads(item.data)
    return record


def iso_from_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with a ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@dataclass
class RetryRecord:
    """A batch waiting for a delayed retry, as stored in the retry location.

    It keeps the *packaged* records, so a retried delivery sends exactly the bytes the
    first attempt sent (same object name, same ``_id``s) even if the config changed in
    between; the original events ride along for the dead letter if it never succeeds.
    ``delayed_attempts`` counts delayed attempts already made; ``attempts`` counts every
    attempt (immediate ones included). ``name`` is the record's stable storage name.
    """

    connector: str
    prefix: str
    items: list[Packaged]
    name: str
    attempts: int
    delayed_attempts: int
    first_failed_at: str
    last_error: str
    last_status: int | None
    not_before_ms: int

    def to_json_dict(self) -> dict[str, Any]:
        """The stored form (JSON)."""
        return {
            "version": 1,
            "connector": self.connector,
            "prefix": self.prefix,
            "name": self.name,
            "attempts": self.attempts,
            "delayed_attempts": self.delayed_attempts,
            "first_failed_at": self.first_failed_at,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "not_before_ms": self.not_before_ms,
            "not_before": iso_from_ms(self.not_before_ms),
            # Not ``data``: the record is stored once, as JSON; it is serialized again on
            # the way out (the same bytes).
            # The original event as JSON (not its raw line): stored records stay one format.
            "items": [
                i._asdict()
                | {"record": record_of(i), "data": None, "event": original_event(i.event)}
                for i in self.items
            ],
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> RetryRecord:
        """Read the stored form back.

        Raises:
            KeyError, TypeError, ValueError: for a record that is not a retry record.
        """
        return cls(
            connector=data["connector"],
            prefix=data["prefix"],
            items=[Packaged(**i) for i in data["items"]],
            name=data["name"],
            attempts=int(data["attempts"]),
            delayed_attempts=int(data["delayed_attempts"]),
            first_failed_at=data["first_failed_at"],
            last_error=data["last_error"],
            last_status=data["last_status"],
            not_before_ms=int(data["not_before_ms"]),
        )


class Chunk(list):  # type: ignore[type-arg,unused-ignore]
    """A list of lines, events or records that travels through Beam as one element.

    Behaves exactly like a list; its own type lets the pipeline give chunks a cheap coder
    (see :mod:`transforms.coders`).

    ``raw``, on chunks of events, holds each event's raw input line at the same index
    (None where the line does not say everything, e.g. Pub/Sub attributes were added):
    Route and Filter carry it along, Package keeps it as :attr:`Packaged.event`. None when
    there are no lines (events made in tests, or chunks of something else).

    ``rules``, on one connector's chunks between Route and Package, is the compiled
    connector Route took its snapshot of: Filter and Package use the same one, so a
    config reloaded while the slice is between stages applies to later slices only,
    never to half of this one. None before Route (and in tests that build chunks).
    """

    __slots__ = ("raw", "rules")

    def __init__(
        self,
        items: Any = (),
        raw: list[bytes | None] | None = None,
        rules: Any = None,
    ):
        super().__init__(items)
        self.raw = raw
        self.rules = rules


def rules_of(items: Any) -> Any:
    """The compiled connector a chunk was routed under (:attr:`Chunk.rules`), or None."""
    return getattr(items, "rules", None)


def raw_of(items: Any) -> list[bytes | None] | None:
    """The raw lines of a chunk's events (:attr:`Chunk.raw`); None for any other list."""
    return getattr(items, "raw", None)
