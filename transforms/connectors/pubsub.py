"""``type: pubsub``: publish each record as one Pub/Sub message.

    - id: realtime_topic
      type: pubsub
      route: {events: [error, buffer_start]}
      package: {template: flat_event}      # optional: the record is the message data
      deliver:
        topic: projects/my-project/topics/video-events   # the full topic path
        endpoint: null                     # optional API endpoint, e.g.
                                           # us-east1-pubsub.googleapis.com:443
        batch: {max_events: 1000, max_wait_s: 1}
        timeouts: {connect_s: 5, read_s: 30}   # read_s bounds each publish

Credentials are Google's Application Default Credentials (a service account with
``roles/pubsub.publisher`` on the topic); no secret is given in the config. With
``PUBSUB_EMULATOR_HOST`` set (``127.0.0.1:8085``), the client talks to that emulator
instead, without credentials, whatever ``endpoint`` says.

**What the template controls:** the message data, one JSON record (UTF-8) per event.
**What this connector fixes:** every message carries the attributes ``event_type``,
``connector`` (the connector id) and ``event_id``, so subscribers can filter without
parsing the data. The client library batches the messages of a ``write`` into publish
requests (at most 1,000 messages and 9 MB each, under Pub/Sub's 10 MB); a message
larger than 10 MB is a dead letter (not retryable).

Errors: ``NOT_FOUND`` (no such topic), ``PERMISSION_DENIED``, ``INVALID_ARGUMENT`` are
not retryable; ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED``,
``INTERNAL``, ``ABORTED`` and a publish that does not finish within the timeouts are.
The client library's own retries are turned off: retrying is shared code.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from pydantic import Field

from transforms.connectors._api import ApiDeliver
from transforms.connectors.base import (
    ConnectorSpec,
    DeliveryBatch,
    DeliveryError,
    ItemFailure,
    PartialDeliveryError,
    Sink,
    WriteResult,
)
from transforms.rules.encode import record_json

MAX_MESSAGE_BYTES = 10_000_000
"""Largest message data Pub/Sub accepts."""

MAX_REQUEST_BYTES = 9_000_000
"""Bytes per publish request the client library collects at most."""

_RETRYABLE_CODES = {408, 409, 429, 499}  # timeout, ABORTED, RESOURCE_EXHAUSTED, CANCELLED


class PubSubDeliver(ApiDeliver):
    """``type: pubsub``: one message per record, with attributes."""

    topic: str = Field(
        pattern=r"^projects/[^/]+/topics/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$",
        description="Full topic path, projects/<project>/topics/<topic> (name: 3-255 chars).",
    )
    endpoint: str | None = Field(
        default=None,
        description="API endpoint host:port (regional endpoints); PUBSUB_EMULATOR_HOST wins.",
    )


class PubSubSink(Sink):
    """Publishes each batch through one ``PublisherClient`` and waits for every message."""

    def __init__(self, connector_id: str, deliver: Any):
        self.connector_id = connector_id
        self.deliver = deliver
        self.publisher: Any = None

    def open(self) -> None:
        """Create the publisher client (``DoFn.setup``)."""
        import google.cloud.pubsub_v1 as pubsub_v1

        kwargs: dict[str, Any] = {}
        if self.deliver.endpoint:
            kwargs["client_options"] = {"api_endpoint": self.deliver.endpoint}
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_bytes=MAX_REQUEST_BYTES, max_latency=0.005, max_messages=1000
            ),
            **kwargs,
        )

    def close(self) -> None:
        """Stop the publisher and close its channel (``DoFn.teardown``)."""
        if self.publisher is not None:
            try:
                self.publisher.stop()
            finally:
                self.publisher.transport.close()
                self.publisher = None

    def write(self, batch: DeliveryBatch) -> WriteResult:
        """Publish every record of the batch; wait until each is accepted or failed."""
        timeouts = self.deliver.timeouts
        publish_timeout = timeouts.connect_s + timeouts.read_s
        failures: list[ItemFailure] = []
        pending: list[tuple[int, int, concurrent.futures.Future[Any]]] = []
        for i, item in enumerate(batch.items):
            data = record_json(item)
            if len(data) > MAX_MESSAGE_BYTES:
                failures.append(
                    ItemFailure(
                        i,
                        item.event_id,
                        False,
                        f"pubsub: message of {len(data)} bytes exceeds the 10 MB limit",
                    )
                )
                continue
            future = self.publisher.publish(
                self.deliver.topic,
                data,
                retry=None,
                timeout=publish_timeout,
                event_type=item.event_type,
                connector=self.connector_id,
                event_id=item.event_id,
            )
            pending.append((i, len(data), future))
        deadline = time.monotonic() + publish_timeout + 5.0
        errors: list[DeliveryError] = []
        sent_bytes = 0
        for i, size, future in pending:
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0.0))
                sent_bytes += size
            except Exception as exc:  # each future fails with the publish request's error
                error = self._classify(exc)
                errors.append(error)
                item = batch.items[i]
                failures.append(
                    ItemFailure(i, item.event_id, error.retryable, str(error), error.status)
                )
        if not failures:
            return WriteResult(name=self.deliver.topic, events=len(batch.items), bytes=sent_bytes)
        delivered = len(batch.items) - len(failures)
        if delivered == 0 and len(errors) == len(failures):
            reasons = {(e.retryable, e.status) for e in errors}
            if len(reasons) == 1:
                raise errors[0]
        failures.sort(key=lambda f: f.index)
        raise PartialDeliveryError(
            f"pubsub {self.deliver.topic}: {delivered} of {len(batch.items)} messages "
            f"published; first failure: {failures[0].reason}",
            WriteResult(self.deliver.topic, delivered, sent_bytes),
            failures=failures,
        )

    def _classify(self, exc: BaseException) -> DeliveryError:
        from google.api_core import exceptions as gexc

        topic = self.deliver.topic
        if isinstance(exc, (concurrent.futures.TimeoutError, TimeoutError)):
            return DeliveryError(
                f"pubsub {topic}: publish did not finish in time (outcome unknown)",
                retryable=True,
                outcome_unknown=True,
            )
        if isinstance(exc, gexc.GoogleAPICallError):
            status = int(exc.code) if exc.code is not None else None
            retryable = status is None or status in _RETRYABLE_CODES or status >= 500
            return DeliveryError(
                f"pubsub {topic}: {type(exc).__name__}: {str(exc.message)[:200]}",
                retryable=retryable,
                status=status,
                outcome_unknown=isinstance(exc, gexc.DeadlineExceeded),
            )
        if isinstance(exc, gexc.RetryError):
            return DeliveryError(f"pubsub {topic}: {str(exc)[:200]}", retryable=True)
        return DeliveryError(f"pubsub {topic}: {type(exc).__name__}: {str(exc)[:200]}", True)


CONNECTOR_TYPES = {"pubsub": ConnectorSpec(PubSubDeliver, PubSubSink)}
