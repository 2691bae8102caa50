"""Immediate retries, shared by every connector: a connector never retries by itself.

    outcome = deliver_with_retries(sink, batch, RetryPolicy(immediate=3))
    outcome.delivered, outcome.failed   # failed: [(item, last error, attempts), ...]

A retryable :class:`~transforms.rules.delivery.DeliveryError` is retried up to
``immediate`` times with jittered exponential backoff (0.2 s, 0.4 s, 0.8 s ... each capped
at 2 s, so well under 10 s in total), or waits what the destination asked for in
``Retry-After`` (capped at 5 s; longer waits are the delayed retry's job). A
non-retryable error fails at once. After a
:class:`~transforms.rules.delivery.PartialDeliveryError` only the failed, retryable
events are sent again.

Every attempt is accounted per event: what a sink neither counts delivered nor names as
failed (a sink bug) fails at once with reason ``sink_unaccounted``, so it is dead-lettered
rather than lost; a sink counting more than it was given is capped at the batch (and the
excess counted in :attr:`Outcome.overclaimed`). Every error text is redacted of the
sink's secrets (:meth:`~transforms.rules.delivery.BatchWriter.redact`) before it can reach a
dead letter or a retry record.

Then :func:`settle_failures` decides, per failed event, between a delayed retry (a
:class:`~transforms.rules.records.RetryRecord` in the retry location, due after the next
step of ``retry.delayed_schedule_s``) and a dead letter. Plain Python, no Beam import.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from transforms.rules.delivery import (
    BatchWriter,
    DeliveryBatch,
    DeliveryError,
    PartialDeliveryError,
    WriteResult,
)
from transforms.rules.naming import batch_digest
from transforms.rules.records import DeadLetter, Packaged, RetryRecord, iso_from_ms

BASE_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
MAX_RETRY_AFTER_S = 5.0

UNACCOUNTED = "sink_unaccounted"
"""Dead-letter reason of events a sink's result did not account for."""


class UnaccountedError(DeliveryError):
    """Events a sink neither reported delivered nor failed: dead letters, never retried.

    Which of a batch's events the sink did deliver is unknown (it said how many, not which),
    so the last ones are taken as the missing ones; a replay may duplicate some.
    """

    dead_letter_reason = UNACCOUNTED


@dataclass
class RetryPolicy:
    """How many immediate retries, and how long to wait before each."""

    immediate: int = 3
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, retry: int, error: DeliveryError) -> float:
        """Seconds to wait before retry number ``retry`` (1-based).

        Total: always a finite number from 0 to :data:`MAX_RETRY_AFTER_S`, whatever the
        error carries (a NaN or infinite ``retry_after_s`` is ignored) and whatever
        ``retry`` is.
        """
        after = error.retry_after_s
        if isinstance(after, (int, float)) and math.isfinite(after):
            return min(max(float(after), 0.0), MAX_RETRY_AFTER_S)
        # Past 2**5 the cap holds anyway; a bounded exponent never overflows a float.
        cap = min(BASE_BACKOFF_S * 2.0 ** min(max(retry - 1, 0), 5), MAX_BACKOFF_S)
        return cap / 2 + self.rng.random() * cap / 2


@dataclass
class Outcome:
    """What happened to one batch after all immediate attempts."""

    delivered: int = 0
    writes: int = 0
    bytes: int = 0
    retries: int = 0
    already_present: int = 0
    possible_duplicates: int = 0
    overclaimed: int = 0
    """Events a sink reported delivered beyond what it was given (a sink bug; not counted)."""
    names: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    """Events of each counted write, in order (the run summary's events per write)."""
    failed: list[tuple[Packaged, DeliveryError, int]] = field(default_factory=list)

    def add(self, result: WriteResult, limit: int | None = None) -> int:
        """Count one successful write of at most ``limit`` events.

        Returns how many of the ``limit`` events it did not account for.
        """
        events = max(result.events, 0)
        if limit is not None and events > limit:
            self.overclaimed += events - limit
            events = limit
        self.delivered += events
        self.already_present += events if result.existed else 0
        if events or result.existed:  # a write of no event wrote nothing (all refused)
            self.writes += 1
            self.sizes.append(events)
            self.bytes += result.bytes
            self.names.append(result.name)
        return 0 if limit is None else limit - events


def deliver_with_retries(sink: BatchWriter, batch: DeliveryBatch, policy: RetryPolicy) -> Outcome:
    """Write a batch with immediate retries; never raises a DeliveryError.

    Every item of ``batch`` ends counted in ``delivered`` or listed in ``failed``, exactly
    once, whatever the sink reports (see the module docstring).
    """
    outcome = Outcome()
    pending = batch
    attempt = 0
    unknown: set[str] = set()  # events sent in an attempt whose outcome is unknown
    while pending.items:
        attempt += 1
        sent = len(pending.items)
        try:
            result = sink.write(pending)
        except PartialDeliveryError as exc:
            errors = exc.errors_for(pending.items)
            fine = [n for n, error in enumerate(errors) if error is None]
            missing = outcome.add(exc.delivered, len(fine))
            lost = set(fine[len(fine) - missing :]) if missing else set()
            again = []
            for n, item in enumerate(pending.items):
                error = errors[n]
                if n in lost:
                    outcome.failed.append(
                        (item, _unaccounted(exc.delivered, sent, missing), attempt)
                    )
                elif error is None:
                    continue
                elif error.retryable and attempt <= policy.immediate:
                    again.append(item)
                else:
                    outcome.failed.append((item, error, attempt))
            pending = dataclasses.replace(pending, items=again)
            error_for_delay: DeliveryError = exc
        except DeliveryError as exc:
            if exc.outcome_unknown:
                unknown.update(i.event_id for i in pending.items)
            if not exc.retryable or attempt > policy.immediate:
                outcome.failed.extend((item, exc, attempt) for item in pending.items)
                return _redacted(outcome, sink)
            error_for_delay = exc
        else:
            missing = outcome.add(result, sent)
            if missing:
                error = _unaccounted(result, sent, missing)
                outcome.failed.extend(
                    (item, error, attempt) for item in pending.items[sent - missing :]
                )
            if unknown:
                outcome.possible_duplicates += sum(
                    1 for i in pending.items[: sent - missing] if i.event_id in unknown
                )
            return _redacted(outcome, sink)
        if pending.items:
            outcome.retries += 1
            policy.sleep(policy.delay(attempt, error_for_delay))
    return _redacted(outcome, sink)


def _unaccounted(result: WriteResult, sent: int, missing: int) -> UnaccountedError:
    return UnaccountedError(
        f"the sink reported {result.events} of {sent} events delivered and nothing about "
        f"{missing} of them; these are dead-lettered as not known to be delivered",
        retryable=False,
    )


def _redacted(outcome: Outcome, sink: BatchWriter) -> Outcome:
    """The outcome with every error text redacted of the sink's secrets."""
    if not outcome.failed:
        return outcome
    clean: dict[int, DeliveryError] = {}
    failed = []
    for item, error, attempts in outcome.failed:
        if id(error) not in clean:
            text = str(error)
            safe = sink.redact(text)
            clean[id(error)] = error if safe == text else _with_text(error, safe)
        failed.append((item, clean[id(error)], attempts))
    outcome.failed = failed
    return outcome


def _with_text(error: DeliveryError, text: str) -> DeliveryError:
    copy = DeliveryError(
        text, error.retryable, error.status, error.retry_after_s, error.outcome_unknown
    )
    copy.dead_letter_reason = error.dead_letter_reason
    return copy


def settle_failures(
    batch: DeliveryBatch,
    outcome: Outcome,
    schedule_s: Sequence[float],
    delayed_enabled: bool,
    now_ms: int | None = None,
) -> tuple[RetryRecord | None, list[DeadLetter]]:
    """Decide what happens to a batch's failed events: a delayed retry or dead letters.

    A retryable failure waits for the next delayed attempt while the schedule has one
    left (and a retry location is configured); anything else is a dead letter with the
    error, status and the number of attempts made (first try included). A batch that came
    from the retry location keeps its record name, attempts and first-failure time.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    previous = batch.retry
    prior_attempts = previous.attempts if previous else 0
    delayed_done = previous.delayed_attempts + 1 if previous else 0
    can_wait = delayed_enabled and delayed_done < len(schedule_s)
    waiting: list[Packaged] = []
    letters: list[DeadLetter] = []
    last: tuple[DeliveryError, int] | None = None
    for item, error, attempts in outcome.failed:
        total = prior_attempts + attempts
        if error.retryable and can_wait:
            waiting.append(item)
            last = (error, total)
            continue
        reason = error.dead_letter_reason or (
            "not_retryable" if not error.retryable else "retries_exhausted"
        )
        letters.append(
            DeadLetter.for_event(
                "deliver", batch.connector_id, item.event, reason, str(error), error.status, total
            )
        )
    if not waiting or last is None:
        return None, letters
    error, total = last
    name = previous.name if previous else retry_record_name(batch)
    record = RetryRecord(
        connector=batch.connector_id,
        prefix=batch.prefix,
        items=waiting,
        name=name,
        attempts=total,
        delayed_attempts=delayed_done,
        first_failed_at=previous.first_failed_at if previous else iso_from_ms(now_ms),
        last_error=str(error),
        last_status=error.status,
        not_before_ms=now_ms + int(schedule_s[delayed_done] * 1000),
    )
    return record, letters


def retry_record_name(batch: DeliveryBatch) -> str:
    """The stable storage name of a batch's retry record: ``<connector>/<digest>.json``."""
    return f"{batch.connector_id}/{batch_digest(i.event_id for i in batch.items)}.json"


def spill_record(batch: DeliveryBatch, why: str, now_ms: int | None = None) -> RetryRecord:
    """A batch parked in the retry location without an attempt, due at once.

    Used when its connector is not keeping up, so that it does not hold back the others.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return RetryRecord(
        connector=batch.connector_id,
        prefix=batch.prefix,
        items=list(batch.items),
        name=retry_record_name(batch),
        attempts=0,
        delayed_attempts=0,
        first_failed_at=iso_from_ms(now_ms),
        last_error=f"not attempted: {batch.connector_id} is not keeping up ({why})",
        last_status=None,
        not_before_ms=now_ms,
    )
