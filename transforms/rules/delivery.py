"""What a delivery attempt is and how it can end: plain values, no Beam, no I/O.

A :class:`DeliveryBatch` is what a sink is asked to write; a write returns a
:class:`WriteResult` or raises a :class:`DeliveryError` (the whole batch failed) or a
:class:`PartialDeliveryError` (some events were delivered, the others are named)::

    batch = DeliveryBatch("ops_datadog", "", items)
    try:
        result = sink.write(batch)           # WriteResult("intake", events=3, bytes=912)
    except PartialDeliveryError as exc:      # e.g. one Elasticsearch _bulk item refused
        exc.delivered.events                 # 2
        exc.errors_for(batch.items)          # [None, DeliveryError('400 ...'), None]
    except DeliveryError as exc:
        exc.retryable, exc.status            # (True, 503)

The shared retry code (:mod:`transforms.rules.retry`) consumes these, and needs of a sink
only what :class:`BatchWriter` says. Connector authors import the same names from
:mod:`transforms.connectors.base`, next to :class:`~transforms.connectors.base.Sink`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from transforms.rules.records import Packaged


@dataclass(frozen=True)
class DeliveryBatch:
    """Events of one connector that travel together (one file, object or request)."""

    connector_id: str
    prefix: str
    items: Sequence[Packaged]
    retry: Any = None
    """The :class:`~transforms.rules.records.RetryRecord` this batch redelivers, if any."""


@dataclass(frozen=True)
class WriteResult:
    """What one successful write delivered."""

    name: str
    events: int
    bytes: int
    existed: bool = False
    """True when a create-only write found its object already there (a retried batch)."""


class DeliveryError(Exception):
    """A batch that could not be delivered.

    Args:
        message: what went wrong (never containing a secret).
        retryable: True for transient failures (throttling, 5xx, timeouts, resets).
        status: the destination's status code, when there is one.
        retry_after_s: how long the destination asked us to wait, when it did.
        outcome_unknown: True when the destination may have accepted the batch anyway (a
            read timeout after the request was sent): resending it may duplicate events.
    """

    dead_letter_reason: str | None = None
    """The ``reason`` of the dead letters this error makes, when not the usual
    ``not_retryable`` / ``retries_exhausted`` (e.g. ``sink_unaccounted``)."""

    def __init__(
        self,
        message: str,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
        outcome_unknown: bool = False,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class ItemFailure:
    """Why one event of a batch was not delivered.

    ``index`` is the event's position in the batch (event ids may repeat in the input, so
    positions, not ids, say which item failed)::

        ItemFailure(7, "e7", False, "mapper_parsing_exception: failed to parse [x]", 400)
    """

    index: int
    event_id: str
    retryable: bool
    reason: str
    status: int | None = None
    retry_after_s: float | None = None
    dead_letter_reason: str | None = None
    """The dead letter's reason when not the default one (e.g. ``format_refused``)."""

    def error(self) -> DeliveryError:
        """This failure as the :class:`DeliveryError` of its one event."""
        error = DeliveryError(self.reason, self.retryable, self.status, self.retry_after_s)
        error.dead_letter_reason = self.dead_letter_reason
        return error


class PartialDeliveryError(DeliveryError):
    """Some events of a batch were delivered and others were not (e.g. Elasticsearch ``_bulk``).

    The shared retry code resends only the failed events whose error is retryable; the
    others become dead letters at once. Delivered events are never sent again.

    The failed events are named one of two ways: by event id (``failed``), or by position
    with the API's per-event detail (``failures``, which a connector reporting per-item
    results gives, since event ids may repeat in a batch)::

        PartialDeliveryError("1 of 2 refused", WriteResult("x", 1, 80),
                             {"e1": DeliveryError("mapping", False, 400)})
        PartialDeliveryError("1 of 2 refused", WriteResult("x", 1, 80),
                             failures=[ItemFailure(1, "e1", False, "mapping", 400)],
                             requests=1)

    The error as a whole is retryable when any failed event is, carries their status
    when they share one, and the longest ``retry_after_s`` any asked for.

    Args:
        message: a summary of what failed.
        delivered: what the request(s) did deliver.
        failed: the error of each failed event, by event id (omit when giving ``failures``).
        failures: one :class:`ItemFailure` per failed event, in batch order.
        requests: how many requests the write sent, when known.

    Attributes:
        failed: the error of each failed event, by event id (with ``failures``: built
            from them).
        failures: the :class:`ItemFailure` s as given (empty when named by id).
        failed_event_ids: the failed events' ids, in batch order when ``failures`` are
            given.
        requests: as given.

    Raises:
        ValueError: when both ``failed`` and ``failures`` are given.
    """

    def __init__(
        self,
        message: str,
        delivered: WriteResult,
        failed: Mapping[str, DeliveryError] | None = None,
        *,
        failures: Sequence[ItemFailure] = (),
        requests: int = 0,
    ):
        if failed is not None and failures:
            raise ValueError(
                "PartialDeliveryError takes failed (by event id) or failures (by position), "
                "not both"
            )
        by_id = dict(failed) if failed is not None else {f.event_id: f.error() for f in failures}
        statuses = {e.status for e in by_id.values()}
        super().__init__(
            message,
            retryable=any(e.retryable for e in by_id.values()),
            status=statuses.pop() if len(statuses) == 1 else None,
            retry_after_s=max((e.retry_after_s or 0.0 for e in by_id.values()), default=0.0)
            or None,
        )
        self.delivered = delivered
        self.failed = by_id
        self.failures = tuple(failures)
        self.failed_event_ids = (
            tuple(f.event_id for f in self.failures) if self.failures else tuple(by_id)
        )
        self.requests = requests

    def errors_for(self, items: Sequence[Packaged]) -> list[DeliveryError | None]:
        """The error of each event of the written batch, by position (None: not failed)."""
        if not self.failures:
            return [self.failed.get(item.event_id) for item in items]
        out: list[DeliveryError | None] = [None] * len(items)
        for f in self.failures:
            if 0 <= f.index < len(items):
                out[f.index] = f.error()
        return out

    def item_failures(self, items: Sequence[Packaged]) -> list[ItemFailure]:
        """One :class:`ItemFailure` per failed event of the written batch, in batch order."""
        if self.failures:
            return sorted(
                (f for f in self.failures if 0 <= f.index < len(items)), key=lambda f: f.index
            )
        return [
            ItemFailure(n, item.event_id, e.retryable, str(e), e.status, e.retry_after_s)
            for n, (item, e) in enumerate(zip(items, self.errors_for(items), strict=True))
            if e is not None
        ]

    def retry_batch(self, batch: DeliveryBatch) -> DeliveryBatch | None:
        """The events worth another attempt, as a batch (None when there are none)."""
        items = [batch.items[f.index] for f in self.item_failures(batch.items) if f.retryable]
        return dataclasses.replace(batch, items=items) if items else None

    def dead_items(self, batch: DeliveryBatch) -> list[tuple[Packaged, ItemFailure]]:
        """The events that must not be retried, each with its failure."""
        return [
            (batch.items[f.index], f) for f in self.item_failures(batch.items) if not f.retryable
        ]


class BatchWriter(Protocol):
    """What the shared retry code needs of a sink: write a batch, redact a text.

    :class:`~transforms.connectors.base.Sink` is one; so is any object with these two
    methods (a scripted stand-in in a test).
    """

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Deliver ``batch``, or raise :class:`DeliveryError` / :class:`PartialDeliveryError`."""
        ...

    def redact(self, text: str) -> str:
        """``text`` without the sink's secrets, before it reaches a dead letter or log."""
        ...
