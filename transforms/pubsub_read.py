"""Read a Pub/Sub subscription with a Python splittable DoFn, on any portable runner.

    messages = p | ReadPubSubPortable("projects/P/subscriptions/S", ack="immediate")

Beam Python's ``ReadFromPubSub`` is a runner-native primitive: Dataflow and the
DirectRunner implement it, portable Flink does not (and its cross-language replacement
needs a Java expansion service). This reader is an unbounded splittable DoFn: the SDK
harness runs it like any DoFn, so it works wherever the runner supports unbounded SDFs
that checkpoint themselves (Flink's portable runner in streaming mode, Prism, the
FnApiRunner). The DirectRunner's streaming engine rejects every SDF (apache/beam#26577),
so the job keeps Beam's reader there and on Dataflow (``--pubsub-reader auto``).

Each ``process`` call is one synchronous ``pull`` (up to ``max_messages``, waiting up to
``pull_timeout_s``), emits :class:`~apache_beam.io.gcp.pubsub.PubsubMessage` elements
(data + attributes, like ``ReadFromPubSub(with_attributes=True)``) and defers the rest of
its restriction, so every pull is a bundle and reaches the next stage at once.

Element timestamps: the ``timestamp_attribute`` (epoch ms or ISO-8601) when given and
readable, else the publish time. Watermark: the oldest timestamp of the last pull, or the
wall clock minus ``watermark_slack_s`` after an empty one; it never moves back. It is an
estimate, not a bound: Pub/Sub does not deliver in order, so later messages can be
behind it. The job is safe with that (global window, processing-time batching: late
data is never dropped); a graph with event-time windows would need a stricter one.

Acknowledgement (``ack``):

* ``finalize``: ack ids are acked in a bundle finalizer, which the runner calls once it
  has durably committed the bundle's output: at-least-once across crashes. Flink calls
  finalizers only on completed checkpoints (``--checkpointing_interval``); without
  checkpointing nothing is ever acked and Pub/Sub redelivers everything after each ack
  deadline (see docs/flink.md). A message waits for the next checkpoint, so its lease is
  extended to ``lease_s`` right after the pull (the CLI sets it from the checkpoint
  interval); otherwise a checkpoint interval longer than the subscription's ack deadline
  would have Pub/Sub redeliver, and the job emit, most messages again.
* ``immediate``: ack right after the messages are emitted. Works on every runner, but a
  crash between the ack and the runner's commit loses those messages.

``stop_at`` (epoch seconds) ends the read: the reader claims the end of its range, the
runner drains what is in flight, and the job finishes by itself (bounded runs and tests;
cancelling a Flink job instead drops buffered state).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.rules.events import to_epoch_ms

ACK_MODES = ("finalize", "immediate")
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253402300799999
"""Event times taken from an attribute: 1970 to the end of year 9999, else publish time."""
MAX_LEASE_S = 600
"""The longest ack deadline Pub/Sub accepts."""
END = sys.maxsize
"""The end of every reader's offset range: claiming it finishes the reader."""

_LOG = logging.getLogger(__name__)

STOP = threading.Event()
"""Set to end every reader in this process as ``stop_at`` would (the CLI's SIGINT/SIGTERM
drain; the reader runs in the launching process on the default engine, ``LOOPBACK``)."""


class _UnboundedOffsetTracker(OffsetRestrictionTracker):
    """Offsets ``[start, END)``, one per pull; never done until ``END`` is claimed."""

    def is_bounded(self) -> bool:
        return False


class _OnePerSubscription(RestrictionProvider):
    """One restriction ``[0, END)`` per subscription, never split up front."""

    def initial_restriction(self, element: Any) -> OffsetRange:
        return OffsetRange(0, END)

    def create_tracker(self, restriction: OffsetRange) -> _UnboundedOffsetTracker:
        return _UnboundedOffsetTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 1  # the backlog is unknown; a constant keeps runners from splitting by size

    def truncate(self, element: Any, restriction: OffsetRange) -> None:
        return None  # drained: stop reading at once


_RESTRICTION = beam.DoFn.RestrictionParam(_OnePerSubscription())
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _PullSubscription(beam.DoFn):
    def __init__(
        self,
        ack: str,
        stop_at: float | None,
        timestamp_attribute: str | None,
        max_messages: int,
        pull_timeout_s: float,
        watermark_slack_s: float,
        lease_s: int | None,
    ):
        if ack not in ACK_MODES:
            raise ValueError(f"ack must be one of {ACK_MODES}, got {ack!r}")
        self.ack = ack
        self.stop_at = stop_at
        self.timestamp_attribute = timestamp_attribute
        self.max_messages = max_messages
        self.pull_timeout_s = pull_timeout_s
        self.watermark_slack_s = watermark_slack_s
        self.lease_s = min(lease_s, MAX_LEASE_S) if lease_s else None

    def setup(self) -> None:
        # Imported here, not with the module: a batch run imports this module but never
        # reads Pub/Sub, and these load the Pub/Sub client library (~0.07 s of start-up).
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

        self.message = PubsubMessage
        self.client = pubsub_v1.SubscriberClient()

    def teardown(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _pull(self, subscription: str) -> list[Any]:
        from google.api_core import exceptions

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # return_immediately
                response = self.client.pull(
                    request={
                        "subscription": subscription,
                        "max_messages": self.max_messages,
                        "return_immediately": False,
                    },
                    timeout=self.pull_timeout_s,
                )
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []
        return list(response.received_messages)

    def _acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), 2500):  # the API takes 2,500 ids per call
            self.client.acknowledge(
                request={"subscription": subscription, "ack_ids": ack_ids[start : start + 2500]},
                timeout=30,
            )

    def _extend(self, subscription: str, ack_ids: list[str]) -> None:
        """Keep pulled messages leased until the runner can finalize (ack) them."""
        for start in range(0, len(ack_ids), 2500):
            self.client.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": ack_ids[start : start + 2500],
                    "ack_deadline_seconds": self.lease_s,
                },
                timeout=30,
            )

    def _finalize(self, subscription: str, ack_ids: list[str]) -> None:
        try:
            self._acknowledge(subscription, ack_ids)
        except Exception as exc:  # an expired lease: Pub/Sub redelivers (at least once)
            _LOG.warning("acking %d messages of %s failed: %s", len(ack_ids), subscription, exc)

    def _timestamp(self, message: Any) -> float:
        if self.timestamp_attribute:
            # Like ReadFromPubSub: milliseconds since the epoch (as text) or RFC 3339.
            # Anything unreadable or out of range falls back to the publish time: one bad
            # attribute must not fail the pull (it would be redelivered and fail forever).
            value = message.attributes.get(self.timestamp_attribute)
            try:
                digits = bool(value) and value.isascii() and value.isdigit()
                ms = int(value) if digits else to_epoch_ms(value)
            except (ValueError, OverflowError):
                ms = None
            if ms is not None and MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
                return ms / 1000
        return float(message.publish_time.timestamp())

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        subscription: str,
        # The finalizer must come before the restriction and watermark parameters: Beam
        # 2.77 passes those two by keyword, the others by position ("got multiple values
        # for argument 'tracker'" otherwise).
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: Any = _RESTRICTION,
        watermark: Any = _WATERMARK,
    ) -> Iterator[Any]:
        position = tracker.current_restriction().start
        if tracker.try_claim(position):
            received = self._pull(subscription)
            oldest: float | None = None
            for r in received:
                m = r.message
                when = self._timestamp(m)
                oldest = when if oldest is None else min(oldest, when)
                message = self.message(
                    m.data, dict(m.attributes), m.message_id, m.publish_time, m.ordering_key
                )
                yield TimestampedValue(message, Timestamp.of(when))
            ack_ids = [r.ack_id for r in received]
            if self.ack == "finalize":
                if ack_ids and self.lease_s:
                    self._extend(subscription, ack_ids)
                # Registered even with nothing to ack: a runner may finalize every bundle
                # of a stage that can ask for it (Prism does), and the SDK refuses to
                # finalize a bundle that registered nothing ("Bundle is not in a
                # finalizable state", an error per empty pull).
                finalizer.register(lambda ids=ack_ids: self._finalize(subscription, ids))
            elif ack_ids:
                self._acknowledge(subscription, ack_ids)
            if STOP.is_set() or (self.stop_at is not None and time.time() >= self.stop_at):
                _LOG.info("reading %s: stop time or signal reached, finishing", subscription)
                tracker.try_claim(END)  # the rest of the range is done: the reader ends
            else:
                mark = Timestamp.of(oldest if oldest is not None else time.time())
                if oldest is None:
                    mark -= Duration.of(self.watermark_slack_s)
                current = watermark.current_watermark()
                if current is None or mark > current:
                    watermark.set_watermark(mark)
                # Beam 2.77 treats a yielded ProcessContinuation as an element: defer here.
                # Messages: come back at once (more may wait); none: the pull waited already.
                tracker.defer_remainder(None)


class ReadPubSubPortable(beam.PTransform):
    """Read ``subscription`` as :class:`PubsubMessage` elements (see the module docstring).

    Args:
        subscription: ``projects/P/subscriptions/S``.
        ack: ``finalize`` (after the runner commits; needs Flink checkpointing) or
            ``immediate`` (after emitting).
        stop_at: epoch seconds after which the reader finishes (None: never).
        timestamp_attribute: attribute holding the event time (epoch ms or ISO-8601).
        lease_s: with ``finalize``, extend each pulled message's ack deadline to this
            many seconds (at most 600) right after the pull, so that it is not
            redelivered while it waits for the next checkpoint; set it above the
            checkpoint interval.
    """

    def __init__(
        self,
        subscription: str,
        ack: str = "finalize",
        stop_at: float | None = None,
        timestamp_attribute: str | None = None,
        max_messages: int = 500,
        pull_timeout_s: float = 1.0,
        watermark_slack_s: float = 2.0,
        lease_s: int | None = None,
    ):
        super().__init__()
        self.subscription = subscription
        self.pull = _PullSubscription(
            ack,
            stop_at,
            timestamp_attribute,
            max_messages,
            pull_timeout_s,
            watermark_slack_s,
            lease_s,
        )

    def expand(self, pbegin: Any) -> Any:
        return (
            pbegin
            | "Subscription" >> beam.Create([self.subscription])
            | "Pull" >> beam.ParDo(self.pull)
        )


@dataclass(frozen=True)
class PubSubReading:
    """How a streaming job reads its subscriptions (events and retry records).

    ``portable``: :class:`ReadPubSubPortable` (Flink, Prism, other portable runners)
    instead of Beam's ``ReadFromPubSub`` (DirectRunner, Dataflow). ``ack``, ``stop_at``
    and ``lease_s`` apply to the portable reader only.
    """

    portable: bool = False
    ack: str = "finalize"
    stop_at: float | None = None
    lease_s: int | None = None

    def read(
        self,
        subscription: str | None,
        topic: str | None = None,
        timestamp_attribute: str | None = None,
    ) -> beam.PTransform:
        """The read transform for ``subscription`` (or ``topic``: Beam's reader only)."""
        if not self.portable:
            from apache_beam.io.gcp.pubsub import ReadFromPubSub

            return ReadFromPubSub(
                topic=topic,
                subscription=subscription,
                with_attributes=True,
                timestamp_attribute=timestamp_attribute,
            )
        if subscription is None:
            raise ValueError(
                "the portable Pub/Sub reader needs a subscription (--subscription), not a topic"
            )
        return ReadPubSubPortable(
            subscription, self.ack, self.stop_at, timestamp_attribute, lease_s=self.lease_s
        )
